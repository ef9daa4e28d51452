package local

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"kumo.dev/kumo/internal/storage"
	"kumo.dev/kumo/internal/storage/golden"
	"kumo.dev/kumo/internal/storage/importer"
	apps "kumo.dev/kumo/pkg/apis/apps/v1alpha1"
)

// A local disk is filled in a scratch directory and linked into place only once complete: at
// every moment of an import (where a killed agent would leave it), the disk's own file does not
// exist, so the restarted agent finds the disk absent and never opens a half-filled file.
func TestAnImportInProgressIsNotADiskYet(t *testing.T) {
	needTools(t)
	dir := t.TempDir()
	raw := filepath.Join(dir, "src.raw")
	if out, err := exec.Command("qemu-img", "create", "-q", "-f", "raw", raw, "16M").CombinedOutput(); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	if out, err := exec.Command("qemu-io", "-f", "raw", "-c", "write -P 0x3c 0 16M", raw).CombinedOutput(); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	srv := httptest.NewServer(http.FileServer(http.Dir(dir)))
	defer srv.Close()
	d := &Driver{Dir: t.TempDir(), Networks: loopbackAllowed}
	key := keyFile(t, "tenant-a-key-0123456789abcdef0123456789")
	dk := disk("imported", "64Mi", apps.VMDiskSource{HTTP: &apps.HTTPSource{URL: srv.URL + "/src.raw"}})
	var checked, filling int
	progress := func(p int) {
		checked++
		if _, err := os.Stat(d.Path(dk)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("at %d%% of the import the disk's file exists (err %v): a kill now would leave a half-filled disk", p, err)
		}
		if _, err := d.Open(context.Background(), dk, key); !errors.Is(err, storage.ErrNotFound) {
			t.Errorf("Open at %d%% of the import: err = %v, want ErrNotFound", p, err)
		}
		if p > 50 {
			filling++ // the conversion into the new disk runs
		}
	}
	vol, err := storage.Ensure(context.Background(), d, storage.Request{Disk: dk, Key: key, Progress: progress})
	if err != nil {
		t.Fatal(err)
	}
	if filling == 0 {
		t.Fatalf("no progress reported while the disk was filled (%d reports): nothing was checked", checked)
	}
	if err := qemuIO(vol.Path, key, "read -P 0x3c 0 16M"); err != nil {
		t.Errorf("the finished disk: %v", err)
	}
}

// A golden image the node does not hold is final only when the catalog knows it is gone (no
// GoldenImage of that name): an image not cached yet is tried again, never a Failed disk.
func TestAGoldenImageNotCachedYetIsNotAMissingSource(t *testing.T) {
	objects := map[string]string{"os": "11111111-aaaa"}
	catalog := &golden.Catalog{Dir: t.TempDir(), ImagesDir: t.TempDir(), Objects: func() (map[string]string, bool) { return objects, true }}
	d := &Driver{Dir: t.TempDir(), Golden: catalog}
	key := keyFile(t, "tenant-a-key-0123456789abcdef0123456789")
	_, err := ensure(d, disk("fromos", "64Mi", apps.VMDiskSource{Image: &apps.ImageSource{Name: "os"}}), key, nil)
	if err == nil || errors.Is(err, storage.ErrNoSource) {
		t.Fatalf("disk from an image not cached yet: err = %v, want an error that is not ErrNoSource", err)
	}
	_, err = ensure(d, disk("fromgone", "64Mi", apps.VMDiskSource{Image: &apps.ImageSource{Name: "gone"}}), key, nil)
	if !errors.Is(err, storage.ErrNoSource) {
		t.Fatalf("disk from an image that does not exist: err = %v, want ErrNoSource", err)
	}
}

// loopbackAllowed lets a driver import from the test's loopback HTTP server.
var loopbackAllowed = importer.Networks{Allowed: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}}
