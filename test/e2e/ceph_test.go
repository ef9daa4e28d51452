package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"kumo.dev/kumo/internal/testceph"
	apps "kumo.dev/kumo/pkg/apis/apps/v1alpha1"
	kumo "kumo.dev/kumo/pkg/apis/kumo/v1alpha1"
)

func TestReplicatedDisksKeepDataAcrossRestartsInThreeDatacenters(t *testing.T) {
	needCluster(t)
	needImages(t)
	ctx := context.Background()
	ceph, err := testceph.Start(ctx, repoRoot())
	if err != nil {
		t.Fatalf("start the Ceph test cluster: %v", err)
	}
	defer ceph.Stop()
	c := startAllInOne(t, "--cpus", "8", "--ceph-conf", ceph.Conf, "--ceph-user", ceph.User, "--ceph-pool", ceph.Pool)
	kc := c.NewTenant(t, "rep")
	cl := c.Client(t, kc)
	ns := kumo.TenantNamespace("rep")
	manifest := strings.ReplaceAll(tinyVM("vmr", "sys-r", "  - data-r\n"), "storageClass: local", "storageClass: replicated") +
		"---\napiVersion: apps.cozystack.io/v1alpha1\nkind: VMDisk\nmetadata:\n  name: data-r\nspec:\n  storage: 1Gi\n  storageClass: replicated\n"
	if r := Run(kc, manifest, bins.kumo, "apply", "-f", "-"); r.Err != nil {
		t.Fatal(r)
	}
	marker := func(inc int64) {
		waitVM(t, cl, ns, "vmr", fmt.Sprintf("incarnation %d running", inc), 4*time.Minute, func(vm *apps.VMInstance) bool { return running(vm) && vm.Status.Incarnation == inc })
		eventually(t, 4*time.Minute, "the guest's marker", func() bool {
			return strings.Contains(c.MustKumo(t, kc, "console", "vmr", "--show-log"), "KUMO-GUEST-READY hostname=vmr")
		})
	}
	marker(1)
	r := consoleRun(kc, "vmr", "echo KUMO-PERSIST-42 > /dev/vdb; sync; echo written-$((1+1))")
	if !strings.Contains(r.Stdout, "written-2") {
		t.Fatalf("writing to the data disk: %s", r)
	}
	c.MustKumo(t, kc, "restart", "vmr")
	marker(2)
	r = consoleRun(kc, "vmr", "head -c 15 /dev/vdb; echo")
	if !strings.Contains(r.Stdout, "KUMO-PERSIST-42") {
		t.Errorf("data written before the restart is gone: %s", r)
	}

	// Growing the data disk grows it online: the guest sees 2 GiB at once.
	grown := "apiVersion: apps.cozystack.io/v1alpha1\nkind: VMDisk\nmetadata:\n  name: data-r\nspec:\n  storage: 2Gi\n  storageClass: replicated\n"
	if r := Run(kc, grown, bins.kumo, "apply", "-f", "-"); r.Err != nil {
		t.Fatal(r)
	}
	eventually(t, time.Minute, "the replicated disk grown online", func() bool {
		r := consoleRun(kc, "vmr", "cat /sys/block/vdb/size")
		return strings.Contains(r.Stdout, "4194304")
	})

	// The system disk is a copy-on-write clone of the tenant's encrypted copy of the golden image.
	ls0, _ := ceph.RBD(ctx, "ls", "--namespace", ns, ceph.Pool)
	for _, l := range strings.Fields(ls0) {
		if strings.HasPrefix(l, "sys-r.") {
			info, _ := ceph.RBD(ctx, "info", ceph.Pool+"/"+ns+"/"+l)
			if !strings.Contains(info, "parent: "+ceph.Pool+"/"+ns+"/golden_kumo-tiny.") {
				t.Errorf("system disk %s is not a clone of the tenant's golden base: %s", l, info)
			}
		}
	}

	// An ISO on replicated storage boots next to a blank replicated disk.
	srv, _ := imageServer(t)
	defer srv.Close()
	if r := Run(kc, isoVM("rep-iso", srv.URL+"/tiny.iso", "replicated"), bins.kumo, "apply", "-f", "-"); r.Err != nil {
		t.Fatal(r)
	}
	bootsFromISO(t, c, kc, cl, ns, "rep-iso")

	// The image is LUKS2-encrypted and its objects sit in three datacenters.
	ls, err := ceph.RBD(ctx, "ls", "--namespace", ns, ceph.Pool)
	if err != nil {
		t.Fatal(err)
	}
	image := ""
	for _, l := range strings.Fields(ls) {
		if strings.HasPrefix(l, "data-r.") {
			image = l
		}
	}
	out, err := ceph.RBD(ctx, "info", "--format", "json", ceph.Pool+"/"+ns+"/"+image)
	if err != nil {
		t.Fatal(err)
	}
	var info struct {
		Prefix string `json:"block_name_prefix"`
	}
	if err := json.Unmarshal([]byte(out), &info); err != nil || info.Prefix == "" {
		t.Fatalf("rbd info: %v %s", err, out)
	}
	// The guest wrote at the start of the disk: raw offset 16 MiB (after the LUKS2 header), the
	// image's fifth 4 MiB RADOS object. Read it straight from RADOS.
	raw, err := exec.CommandContext(ctx, "rados", "-c", ceph.Conf, "-p", ceph.Pool, "-N", ns, "get", info.Prefix+".0000000000000004", "-").Output()
	if err != nil || len(raw) == 0 {
		t.Errorf("read the disk's data object from RADOS: %v", err)
	} else if strings.Contains(string(raw), "KUMO-PERSIST-42") {
		t.Error("the replicated disk stores the tenant's data in clear")
	}
	mapOut, err := ceph.Ceph(ctx, "osd", "map", ceph.Pool, info.Prefix+".0000000000000000", ns, "-f", "json")
	if err != nil {
		t.Fatal(err)
	}
	var m struct {
		Acting []int `json:"acting"`
	}
	if err := json.Unmarshal([]byte(mapOut), &m); err != nil || len(m.Acting) != 3 {
		t.Fatalf("osd map: %v %s", err, mapOut)
	}
	dcs := map[string]bool{}
	for _, osd := range m.Acting {
		find, err := ceph.Ceph(ctx, "osd", "find", fmt.Sprint(osd), "-f", "json")
		if err != nil {
			t.Fatal(err)
		}
		var f struct {
			Crush map[string]string `json:"crush_location"`
		}
		json.Unmarshal([]byte(find), &f)
		dcs[f.Crush["datacenter"]] = true
	}
	if len(dcs) != 3 {
		t.Errorf("replicas of %s sit in datacenters %v, want 3 different ones", info.Prefix, dcs)
	}
}
