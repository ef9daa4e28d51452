package local

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"kumo.dev/kumo/internal/storage"
	"kumo.dev/kumo/internal/storage/golden"
	"kumo.dev/kumo/internal/storage/importer"
	apps "kumo.dev/kumo/pkg/apis/apps/v1alpha1"
)

func disk(name, size string, src apps.VMDiskSource) *apps.VMDisk {
	q := resource.MustParse(size)
	return &apps.VMDisk{ObjectMeta: metav1.ObjectMeta{Namespace: "tenant-a", Name: name, UID: types.UID("uid-" + name)},
		Spec: apps.VMDiskSpec{Source: src, Storage: &q, StorageClass: apps.StorageLocal}}
}

// ensure opens or creates a disk as the agent does.
func ensure(d *Driver, dk *apps.VMDisk, key storage.Key, progress storage.Progress) (storage.Volume, error) {
	return storage.Ensure(context.Background(), d, storage.Request{Disk: dk, Key: key, Progress: progress})
}

// ensureFrom creates a clone of the resolved source disk.
func ensureFrom(d *Driver, dk *apps.VMDisk, key storage.Key, source *apps.VMDisk) (storage.Volume, error) {
	return storage.Ensure(context.Background(), d, storage.Request{Disk: dk, Key: key, Source: source})
}

func keyFile(t *testing.T, secret string) storage.Key {
	t.Helper()
	p := filepath.Join(t.TempDir(), "key")
	if err := os.WriteFile(p, []byte(secret), 0o600); err != nil {
		t.Fatal(err)
	}
	return storage.Key{File: p}
}

// qemuIO runs qemu-io on an encrypted qcow2 with a key; it fails with the wrong key.
func qemuIO(path string, key storage.Key, cmd string) error {
	out, err := exec.Command("qemu-io", "--object", "secret,id=s,file="+key.File, "--image-opts",
		"driver=qcow2,file.filename="+path+",encrypt.key-secret=s", "-c", cmd).CombinedOutput()
	if err != nil || strings.Contains(string(out), "failed") || strings.Contains(string(out), "Invalid") {
		return &exec.ExitError{Stderr: out}
	}
	return nil
}

func TestEnsureEncryptsEveryDiskWithTheTenantKey(t *testing.T) {
	for _, tool := range []string{"qemu-img", "qemu-io", "prlimit"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed", tool)
		}
	}
	ctx := context.Background()
	cat := &golden.Catalog{Dir: t.TempDir(), ImagesDir: t.TempDir()}
	d := &Driver{Dir: t.TempDir(), Golden: cat}
	tiny := filepath.Join(cat.ImagesDir, "tiny.qcow2")
	keyA, keyB := keyFile(t, "tenant-a-key-0123456789abcdef0123456789"), keyFile(t, "tenant-b-key-0123456789abcdef0123456789")
	if out, err := exec.Command("qemu-img", "create", "-q", "-f", "qcow2", tiny, "64M").CombinedOutput(); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	if imgs := d.Images(); len(imgs) != 1 || imgs[0] != "tiny" {
		t.Errorf("Images() = %v", imgs)
	}
	v, err := ensure(d, disk("sys", "1Gi", apps.VMDiskSource{Image: &apps.ImageSource{Name: "tiny"}}), keyA, nil)
	if err != nil {
		t.Fatal(err)
	}
	if v.SizeBytes != 1<<30 || v.Format != "qcow2" || v.KeyFile != keyA.File {
		t.Errorf("volume %+v", v)
	}
	info, _ := exec.Command("qemu-img", "info", "-U", v.Path).Output()
	if !strings.Contains(string(info), "backing file: "+tiny) || !strings.Contains(string(info), "encrypted: yes") {
		t.Errorf("not an encrypted overlay of the golden image:\n%s", info)
	}
	if st, _ := os.Stat(v.Path); st.Mode().Perm() != 0o600 {
		t.Errorf("disk mode %o", st.Mode().Perm())
	}
	// Tenant A's data opens with A's key only.
	if err := qemuIO(v.Path, keyA, "write -P 0x61 0 1M"); err != nil {
		t.Fatalf("write with the tenant's key: %v", err)
	}
	if err := qemuIO(v.Path, keyB, "read 0 1M"); err == nil {
		t.Error("another tenant's key opened the disk")
	}
	raw, _ := os.ReadFile(v.Path)
	if strings.Contains(string(raw), strings.Repeat("a", 4096)) {
		t.Error("the tenant's data is stored in clear")
	}
	again, err := ensure(d, disk("sys", "1Gi", apps.VMDiskSource{Image: &apps.ImageSource{Name: "tiny"}}), keyA, nil)
	if err != nil || again.Path != v.Path {
		t.Errorf("Ensure is not idempotent: %+v %v", again, err)
	}
	// Clone keeps the data and the key.
	c, err := ensureFrom(d, disk("copy", "1Gi", apps.VMDiskSource{Disk: &apps.DiskSource{Name: "sys"}}), keyA, disk("sys", "1Gi", apps.VMDiskSource{}))
	if err != nil {
		t.Fatal(err)
	}
	if err := qemuIO(c.Path, keyA, "read -P 0x61 0 1M"); err != nil {
		t.Errorf("clone lost the data: %v", err)
	}
	if _, err := ensure(d, disk("blank", "2Gi", apps.VMDiskSource{}), keyA, nil); err != nil {
		t.Errorf("blank disk: %v", err)
	}
	if _, err := ensure(d, disk("nokey", "2Gi", apps.VMDiskSource{}), storage.Key{}, nil); err == nil {
		t.Error("a disk was created without a key")
	}
	_, err = ensure(d, disk("small", "32Mi", apps.VMDiskSource{Image: &apps.ImageSource{Name: "tiny"}}), keyA, nil)
	if !importer.IsRefused(err) || !strings.Contains(err.Error(), "larger than spec.storage 32Mi") {
		t.Errorf("image larger than the disk: %v", err)
	}
	if _, err = ensure(d, disk("nope", "1Gi", apps.VMDiskSource{Image: &apps.ImageSource{Name: "missing"}}), keyA, nil); err == nil || !strings.Contains(err.Error(), "golden image missing is not on this node") {
		t.Errorf("missing image: %v", err)
	}
	objs, err := d.List(ctx)
	if err != nil || len(objs["tenant-a"]) != 3 {
		t.Errorf("List() = %v, %v", objs, err)
	}
	if err := d.Delete(ctx, "tenant-a", strings.TrimSuffix(filepath.Base(v.Path), ".qcow2")); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(v.Path); !os.IsNotExist(err) {
		t.Errorf("disk still there after Delete: %v", err)
	}
}

func TestEnsureImportsFromHTTP(t *testing.T) {
	for _, tool := range []string{"qemu-img", "qemu-io", "prlimit"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed", tool)
		}
	}
	dir := t.TempDir()
	src := filepath.Join(dir, "src.vmdk")
	raw := filepath.Join(dir, "src.raw")
	if out, err := exec.Command("qemu-img", "create", "-q", "-f", "raw", raw, "16M").CombinedOutput(); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	exec.Command("qemu-io", "-f", "raw", "-c", "write -P 0x7e 0 1M", raw).Run()
	if out, err := exec.Command("qemu-img", "convert", "-q", "-f", "raw", "-O", "vmdk", "-o", "subformat=streamOptimized", raw, src).CombinedOutput(); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	hostile := filepath.Join(dir, "hostile.qcow2")
	exec.Command("qemu-img", "create", "-q", "-f", "qcow2", "-b", "/etc/hostname", "-F", "raw", hostile).Run()
	srv := httptest.NewServer(http.FileServer(http.Dir(dir)))
	defer srv.Close()

	d := &Driver{Dir: t.TempDir()}
	key := keyFile(t, "tenant-a-key-0123456789abcdef0123456789")
	// Without an allow-list the test server, on loopback, is out of reach.
	_, err := ensure(d, disk("loopback", "1Gi", apps.VMDiskSource{HTTP: &apps.HTTPSource{URL: srv.URL + "/src.vmdk"}}), key, nil)
	if !importer.IsRefused(err) || !strings.Contains(err.Error(), "address 127.0.0.1 is not allowed for imports") {
		t.Fatalf("import from loopback without an allow-list: %v", err)
	}
	d.Networks = importer.Networks{Allowed: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}}
	var progress []int
	var v storage.Volume
	v, err = ensure(d, disk("imported", "1Gi", apps.VMDiskSource{HTTP: &apps.HTTPSource{URL: srv.URL + "/src.vmdk"}}), key, func(p int) { progress = append(progress, p) })
	if err != nil {
		t.Fatal(err)
	}
	if err := qemuIO(v.Path, key, "read -P 0x7e 0 1M"); err != nil {
		t.Errorf("imported data: %v", err)
	}
	if v.SizeBytes != 1<<30 || len(progress) == 0 || progress[len(progress)-1] != 100 {
		t.Errorf("size %d progress %v", v.SizeBytes, progress)
	}
	_, err = ensure(d, disk("hostile", "1Gi", apps.VMDiskSource{HTTP: &apps.HTTPSource{URL: srv.URL + "/hostile.qcow2"}}), key, nil)
	if !importer.IsRefused(err) || !strings.Contains(err.Error(), "backing file") {
		t.Errorf("hostile image: %v", err)
	}
	if m, _ := filepath.Glob(filepath.Join(d.Dir, "tenant-a", "hostile.*")); len(m) != 0 {
		t.Error("a refused import left a disk behind")
	}
}
