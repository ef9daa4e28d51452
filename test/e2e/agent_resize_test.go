package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	apps "kumo.dev/kumo/pkg/apis/apps/v1alpha1"
	kumo "kumo.dev/kumo/pkg/apis/kumo/v1alpha1"
)

// twoDiskVM is a VM booting a tiny image disk next to a blank one, listed in the given order
// with the given sizes.
func twoDiskVM(name string, order []string, sizes map[string]string) string {
	var b strings.Builder
	fmt.Fprintf(&b, `apiVersion: apps.cozystack.io/v1alpha1
kind: VMDisk
metadata:
  name: %[1]s-boot
spec:
  source:
    image:
      name: kumo-tiny
  storage: %[2]s
  storageClass: local
---
apiVersion: apps.cozystack.io/v1alpha1
kind: VMDisk
metadata:
  name: %[1]s-data
spec:
  storage: %[3]s
  storageClass: local
---
apiVersion: apps.cozystack.io/v1alpha1
kind: VMInstance
metadata:
  name: %[1]s
spec:
  instanceType: s1.small
  instanceProfile: debian
  disks:
`, name, sizes["boot"], sizes["data"])
	for _, d := range order {
		fmt.Fprintf(&b, "  - %s-%s\n", name, d)
	}
	return b.String()
}

// localDiskSize is the virtual size of a local disk's file on the node, read by qemu-img.
func localDiskSize(t *testing.T, dataDir, disk string) int64 {
	t.Helper()
	var files []string
	_ = filepath.WalkDir(filepath.Join(dataDir, "disks"), func(path string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.HasPrefix(d.Name(), disk+".") && strings.HasSuffix(d.Name(), ".qcow2") {
			files = append(files, path)
		}
		return nil
	})
	if len(files) != 1 {
		t.Fatalf("files of disk %s: %v, want one", disk, files)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "qemu-img", "info", "--force-share", "--output=json", files[0]).Output()
	if err != nil {
		t.Fatalf("qemu-img info %s: %v", files[0], err)
	}
	var info struct {
		VirtualSize int64 `json:"virtual-size"`
	}
	if err := json.Unmarshal(out, &info); err != nil {
		t.Fatalf("qemu-img info %s: %v", files[0], err)
	}
	return info.VirtualSize
}

// TestReorderedDisksGrowTheRightOne: the running QEMU knows its disks in the order of the start;
// growing a disk after spec.disks was reordered must grow that disk, not the one now at its
// position.
func TestReorderedDisksGrowTheRightOne(t *testing.T) {
	c := startAllInOne(t)
	tenant := "reorder"
	kc := c.NewTenant(t, tenant)
	cl := c.Client(t, kc)
	ns := kumo.TenantNamespace(tenant)
	small := map[string]string{"boot": "1Gi", "data": "1Gi"}
	if r := Run(kc, twoDiskVM("vm", []string{"boot", "data"}, small), bins.kumo, "apply", "-f", "-"); r.Err != nil {
		t.Fatal(r)
	}
	waitVM(t, cl, ns, "vm", "Running", bootTimeout, running)

	// Reorder while it runs, then grow the data disk (now first in spec.disks).
	if r := Run(kc, twoDiskVM("vm", []string{"data", "boot"}, small), bins.kumo, "apply", "-f", "-"); r.Err != nil {
		t.Fatal(r)
	}
	grown := map[string]string{"boot": "1Gi", "data": "2Gi"}
	if r := Run(kc, twoDiskVM("vm", []string{"data", "boot"}, grown), bins.kumo, "apply", "-f", "-"); r.Err != nil {
		t.Fatal(r)
	}
	eventually(t, 2*time.Minute, "the data disk reported grown", func() bool {
		d := &apps.VMDisk{}
		return cl.Apps.Get().Namespace(ns).Resource("vmdisks").Name("vm-data").Do(context.Background()).Into(d) == nil &&
			d.Status.Size != nil && d.Status.Size.Value() == 2<<30
	})
	if got := localDiskSize(t, c.Dir, "vm-data"); got != 2<<30 {
		t.Errorf("data disk is %d bytes on the node, want 2 GiB", got)
	}
	if got := localDiskSize(t, c.Dir, "vm-boot"); got != 1<<30 {
		t.Errorf("boot disk is %d bytes on the node, want it untouched at 1 GiB", got)
	}
	if vm := getVM(t, cl, ns, "vm"); vm.Status.Incarnation != 1 || !running(vm) {
		t.Errorf("the VM restarted: phase %s incarnation %d", vm.Status.Phase, vm.Status.Incarnation)
	}
}
