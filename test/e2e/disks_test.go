package e2e

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	apps "kumo.dev/kumo/pkg/apis/apps/v1alpha1"
	kumo "kumo.dev/kumo/pkg/apis/kumo/v1alpha1"
	"kumo.dev/kumo/pkg/client"
)

// imageServer serves the tiny guest in every accepted format, plus a hostile image, on loopback.
func imageServer(t *testing.T) (*httptest.Server, string) {
	t.Helper()
	dir := t.TempDir()
	src := filepath.Join(imagesDir(), "kumo-tiny.qcow2")
	convert := func(format, name string, opts ...string) {
		args := append([]string{"convert", "-q", "-f", "qcow2", "-O", format}, opts...)
		if out, err := exec.Command("qemu-img", append(args, src, filepath.Join(dir, name))...).CombinedOutput(); err != nil {
			t.Fatalf("convert to %s: %v %s", format, err, out)
		}
	}
	convert("qcow2", "tiny.qcow2")
	convert("raw", "tiny.raw")
	convert("vmdk", "tiny.vmdk", "-o", "subformat=streamOptimized")
	convert("vhdx", "tiny.vhdx")
	data, _ := os.ReadFile(filepath.Join(dir, "tiny.qcow2"))
	var gz bytes.Buffer
	w := gzip.NewWriter(&gz)
	w.Write(data)
	w.Close()
	os.WriteFile(filepath.Join(dir, "tiny.qcow2.gz"), gz.Bytes(), 0o644)
	canary := filepath.Join(t.TempDir(), "canary")
	os.WriteFile(canary, []byte("do not read me"), 0o600)
	if out, err := exec.Command("qemu-img", "create", "-q", "-f", "qcow2", "-b", canary, "-F", "raw", filepath.Join(dir, "hostile.qcow2")).CombinedOutput(); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	ova(t, filepath.Join(dir, "tiny.ova"), filepath.Join(dir, "tiny.vmdk"))
	bootableISO(t, src, filepath.Join(dir, "tiny.iso"))
	return httptest.NewServer(http.FileServer(http.Dir(dir))), canary
}

// ova packs a VMDK into an OVA (tar: OVF descriptor, manifest, disk) as VMware and VirtualBox
// export them.
func ova(t *testing.T, path, vmdk string) {
	t.Helper()
	disk, err := os.ReadFile(vmdk)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tw := tar.NewWriter(f)
	for _, m := range []struct {
		name string
		data []byte
	}{
		{"tiny.ovf", []byte(`<?xml version="1.0"?><Envelope xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1"><References><File ovf:href="tiny-disk1.vmdk" ovf:id="file1"/></References></Envelope>`)},
		{"tiny.mf", []byte("SHA256(tiny-disk1.vmdk)= 0\n")},
		{"tiny-disk1.vmdk", disk},
	} {
		tw.WriteHeader(&tar.Header{Name: m.name, Mode: 0o644, Size: int64(len(m.data)), Typeflag: tar.TypeReg})
		tw.Write(m.data)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
}

// bootableISO makes an ISO installer-like medium from the tiny guest's kernel and initramfs
// (taken from the FAT boot partition at 1 MiB of its disk image), booted by isolinux.
func bootableISO(t *testing.T, tinyQcow2, iso string) {
	t.Helper()
	work := t.TempDir()
	raw, tree := filepath.Join(work, "tiny.raw"), filepath.Join(work, "iso")
	os.MkdirAll(filepath.Join(tree, "isolinux"), 0o755)
	steps := [][]string{
		{"qemu-img", "convert", "-q", "-f", "qcow2", "-O", "raw", tinyQcow2, raw},
		{"mcopy", "-i", raw + "@@1048576", "::/vmlinuz", "::/initrd.gz", tree},
		{"cp", "/usr/lib/ISOLINUX/isolinux.bin", "/usr/lib/syslinux/modules/bios/ldlinux.c32", filepath.Join(tree, "isolinux")},
	}
	for _, s := range steps {
		if out, err := exec.Command(s[0], s[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%s: %v %s", strings.Join(s, " "), err, out)
		}
	}
	cfg := "DEFAULT tiny\nPROMPT 0\nTIMEOUT 0\nLABEL tiny\n  LINUX /vmlinuz\n  INITRD /initrd.gz\n  APPEND console=ttyS0 quiet\n"
	if err := os.WriteFile(filepath.Join(tree, "isolinux", "isolinux.cfg"), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("xorriso", "-as", "mkisofs", "-quiet", "-o", iso, "-V", "KUMOTINY", "-b", "isolinux/isolinux.bin",
		"-c", "isolinux/boot.cat", "-no-emul-boot", "-boot-load-size", "4", "-boot-info-table", tree).CombinedOutput()
	if err != nil {
		t.Fatalf("xorriso: %v %s", err, out)
	}
}

// isoVM is a VM booting from an ISO served at url, with a blank disk to install onto.
func isoVM(name, url, class string) string {
	return fmt.Sprintf(`apiVersion: apps.cozystack.io/v1alpha1
kind: VMDisk
metadata:
  name: %[1]s-cd
spec:
  source:
    http:
      url: %[2]s
  optical: true
  storage: 1Gi
  storageClass: %[3]s
---
apiVersion: apps.cozystack.io/v1alpha1
kind: VMDisk
metadata:
  name: %[1]s-blank
spec:
  storage: 1Gi
  storageClass: %[3]s
---
apiVersion: apps.cozystack.io/v1alpha1
kind: VMInstance
metadata:
  name: %[1]s
spec:
  instanceType: s1.small
  instanceProfile: debian
  disks:
  - %[1]s-cd
  - %[1]s-blank
`, name, url, class)
}

// bootsFromISO waits for a VM made by isoVM to boot its installer and checks that the guest
// sees the blank disk and the read-only CD.
func bootsFromISO(t *testing.T, c *Cluster, kc string, cl *client.Client, ns, vm string) {
	t.Helper()
	waitVM(t, cl, ns, vm, "Running", 4*time.Minute, running)
	eventually(t, 4*time.Minute, vm+"'s marker from the ISO", func() bool {
		return strings.Contains(c.MustKumo(t, kc, "console", vm, "--show-log"), "KUMO-GUEST-READY hostname="+vm)
	})
	r := consoleRun(kc, vm, "echo blank=$(cat /sys/block/vda/size) label=$(dd if=/dev/sr0 bs=2048 skip=16 count=1 2>/dev/null | grep -c KUMOTINY) ro=$(cat /sys/block/sr0/ro)")
	if !strings.Contains(r.Stdout, "blank=2097152 label=1 ro=1") {
		t.Errorf("in the guest booted from the ISO, want a 1 GiB blank disk and a read-only CD: %s", r)
	}
	d := &apps.VMDisk{}
	if err := cl.Apps.Get().Namespace(ns).Resource("vmdisks").Name(vm + "-cd").Do(context.Background()).Into(d); err != nil ||
		d.Status.Phase != apps.DiskReady || d.Status.Size == nil || d.Status.Size.Value() >= 1<<30 {
		t.Errorf("the optical disk keeps the ISO's size, not spec.storage: %+v %v", d.Status, err)
	}
	// Each step of the disk's preparation is an event on it.
	eventually(t, 30*time.Second, "the disk's Preparing and Ready events", func() bool {
		events := c.MustKumo(t, kc, "get", "events")
		return strings.Contains(events, "VMDisk/"+vm+"-cd") && strings.Contains(events, "Preparing") && strings.Contains(events, "disk ready on node")
	})
}

func TestISOInstallerBootsNextToABlankDisk(t *testing.T) {
	c := startAllInOne(t, "--cpus", "8")
	srv, _ := imageServer(t)
	defer srv.Close()
	kc := c.NewTenant(t, "installer")
	if r := Run(kc, isoVM("from-iso", srv.URL+"/tiny.iso", "local"), bins.kumo, "apply", "-f", "-"); r.Err != nil {
		t.Fatal(r)
	}
	bootsFromISO(t, c, kc, c.Client(t, kc), kumo.TenantNamespace("installer"), "from-iso")
}

func httpVM(name, url, extra string) string {
	return fmt.Sprintf(`apiVersion: apps.cozystack.io/v1alpha1
kind: VMDisk
metadata:
  name: %[1]s-disk
spec:
  source:
    http:
      url: %[2]s
  storage: 1Gi
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
  - %[1]s-disk
%[3]s`, name, url, extra)
}

func TestImportedDisksBootAndStayIsolated(t *testing.T) {
	c := startAllInOne(t, "--cpus", "8")
	srv, canary := imageServer(t)
	defer srv.Close()
	kcA, kcB := c.NewTenant(t, "importer"), c.NewTenant(t, "neighbour")
	clA := c.Client(t, kcA)
	nsA := kumo.TenantNamespace("importer")
	formats := map[string]string{"qcow2": "tiny.qcow2", "raw": "tiny.raw", "vmdk": "tiny.vmdk", "vhdx": "tiny.vhdx", "gz": "tiny.qcow2.gz", "ova": "tiny.ova"}
	for name, file := range formats {
		if r := Run(kcA, httpVM("from-"+name, srv.URL+"/"+file, ""), bins.kumo, "apply", "-f", "-"); r.Err != nil {
			t.Fatal(r)
		}
	}
	if r := Run(kcA, httpVM("hostile", srv.URL+"/hostile.qcow2", "  runStrategy: Once\n"), bins.kumo, "apply", "-f", "-"); r.Err != nil {
		t.Fatal(r)
	}
	for name := range formats {
		vm := "from-" + name
		waitVM(t, clA, nsA, vm, "Running", 4*time.Minute, running)
		eventually(t, 4*time.Minute, vm+"'s marker", func() bool {
			return strings.Contains(c.MustKumo(t, kcA, "console", vm, "--show-log"), "KUMO-GUEST-READY hostname="+vm)
		})
		d := &apps.VMDisk{}
		if err := clA.Apps.Get().Namespace(nsA).Resource("vmdisks").Name(vm + "-disk").Do(context.Background()).Into(d); err != nil || d.Status.Phase != apps.DiskReady || d.Status.Progress != "100%" {
			t.Errorf("disk of %s: %+v %v", vm, d.Status, err)
		}
	}
	eventually(t, time.Minute, "the hostile image's disk to fail with its reason", func() bool {
		d := &apps.VMDisk{}
		if clA.Apps.Get().Namespace(nsA).Resource("vmdisks").Name("hostile-disk").Do(context.Background()).Into(d) != nil || d.Status.Phase != apps.DiskFailed {
			return false
		}
		for _, cond := range d.Status.Conditions {
			if strings.Contains(cond.Message, "backing file") {
				return true
			}
		}
		return false
	})
	if data, _ := os.ReadFile(canary); string(data) != "do not read me" {
		t.Error("the canary changed")
	}
	if m, _ := filepath.Glob(filepath.Join(c.Dir, "disks", nsA, "hostile-disk.*")); len(m) != 0 {
		t.Errorf("the refused import left a disk: %v", m)
	}

	// Upload: kumo upload streams the image through the API; a hostile upload is refused.
	up := strings.Replace(httpVM("uploaded", "x", ""), "    http:\n      url: x\n", "    upload: {}\n", 1)
	if r := Run(kcA, up, bins.kumo, "apply", "-f", "-"); r.Err != nil {
		t.Fatal(r)
	}
	hostileFile, gzFile := filepath.Join(t.TempDir(), "hostile.qcow2"), filepath.Join(t.TempDir(), "tiny.qcow2.gz")
	exec.Command("qemu-img", "create", "-q", "-f", "qcow2", "-b", canary, "-F", "raw", hostileFile).Run()
	if r := c.Kumo(kcA, "upload", "vmdisk", "uploaded-disk", "--file", hostileFile); r.Err == nil || !strings.Contains(r.Stderr, "backing file") {
		t.Errorf("hostile upload: %s", r)
	}
	resp, err := http.Get(srv.URL + "/tiny.qcow2.gz")
	if err != nil {
		t.Fatal(err)
	}
	gzData, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	os.WriteFile(gzFile, gzData, 0o600)
	if r := c.Kumo(kcA, "upload", "vmdisk", "uploaded-disk", "--file", gzFile); r.Err != nil || !strings.Contains(r.Stdout, "uploaded a qcow2 image") || !strings.Contains(r.Stderr, "100%") {
		t.Fatalf("upload: %s", r)
	}
	waitVM(t, clA, nsA, "uploaded", "Running", 4*time.Minute, running)
	eventually(t, 4*time.Minute, "the uploaded disk's guest marker", func() bool {
		return strings.Contains(c.MustKumo(t, kcA, "console", "uploaded", "--show-log"), "KUMO-GUEST-READY hostname=uploaded")
	})

	// Deleting a disk deletes its data (a disk created again under the same name starts empty).
	c.MustKumo(t, kcA, "delete", "vm", "from-raw")
	c.MustKumo(t, kcA, "delete", "vmdisk", "from-raw-disk")
	eventually(t, 90*time.Second, "the deleted disk's file to be collected", func() bool {
		m, _ := filepath.Glob(filepath.Join(c.Dir, "disks", nsA, "from-raw-disk.*"))
		return len(m) == 0
	})

	// Tenant B cannot use A's disk: names resolve in B's own namespace only.
	m := "apiVersion: apps.cozystack.io/v1alpha1\nkind: VMInstance\nmetadata:\n  name: thief\nspec:\n  instanceType: s1.small\n  disks:\n  - from-qcow2-disk\n"
	if r := Run(kcB, m, bins.kumo, "apply", "-f", "-"); r.Err != nil {
		t.Fatal(r)
	}
	waitVM(t, c.Client(t, kcB), kumo.TenantNamespace("neighbour"), "thief", "a reason that the disk does not exist", time.Minute, func(vm *apps.VMInstance) bool {
		for _, cond := range vm.Status.Conditions {
			if strings.Contains(cond.Message, "disk from-qcow2-disk does not exist") {
				return vm.Status.Node == ""
			}
		}
		return false
	})
	// And B's key does not open A's disk (checked on the node with qemu-img).
	admin := c.Admin(t)
	keyOf := func(tenant string) string {
		k := &kumo.TenantKey{}
		if err := admin.Kumo.Get().Resource("tenantkeys").Name(tenant).Do(context.Background()).Into(k); err != nil {
			t.Fatal(err)
		}
		f := filepath.Join(t.TempDir(), tenant+".key")
		os.WriteFile(f, []byte(k.Key), 0o600)
		return f
	}
	found, _ := filepath.Glob(filepath.Join(c.Dir, "disks", nsA, "from-qcow2-disk.*.qcow2"))
	if len(found) != 1 {
		t.Fatalf("disk file of from-qcow2-disk: %v", found)
	}
	disk := found[0]
	open := func(keyFile string) error {
		out, err := exec.Command("qemu-io", "-r", "-U", "--object", "secret,id=s,file="+keyFile, "--image-opts",
			"driver=qcow2,file.filename="+disk+",encrypt.key-secret=s", "-c", "read 0 4k").CombinedOutput()
		if err == nil && !strings.Contains(string(out), "read 4096/4096 bytes") {
			err = fmt.Errorf("read failed")
		}
		if err != nil {
			return fmt.Errorf("%v: %s", err, out)
		}
		return nil
	}
	if err := open(keyOf("importer")); err != nil {
		t.Errorf("tenant A's own key does not open its disk: %v", err)
	}
	if err := open(keyOf("neighbour")); err == nil {
		t.Error("tenant B's key opened tenant A's disk")
	}
	if r := c.Kumo(kcB, "get", "tenantkeys"); r.Err == nil {
		t.Errorf("a tenant listed tenant keys: %s", r.Stdout)
	}
	if r := c.Kumo(kcA, "get", "--raw", "/apis/apps.cozystack.io/v1alpha1/namespaces/"+nsA+"/vminstances/from-qcow2/diskkey"); r.Err == nil {
		t.Errorf("a tenant fetched its VM's disk key: %s", r.Stdout)
	}
}
