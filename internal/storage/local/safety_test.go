package local

import (
	"context"
	"crypto/sha256"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"k8s.io/apimachinery/pkg/types"

	"kumo.dev/kumo/internal/storage"
	apps "kumo.dev/kumo/pkg/apis/apps/v1alpha1"
)

func needTools(t *testing.T) {
	t.Helper()
	for _, tool := range []string{"qemu-img", "qemu-io", "prlimit"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed", tool)
		}
	}
}

func checksum(t *testing.T, path string) [32]byte {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return sha256.Sum256(data)
}

// failStat makes statFile fail for one path with err until the test ends.
func failStat(t *testing.T, path string, err error) {
	orig := statFile
	statFile = func(p string) (os.FileInfo, error) {
		if p == path {
			return nil, &fs.PathError{Op: "stat", Path: p, Err: err}
		}
		return orig(p)
	}
	t.Cleanup(func() { statFile = orig })
}

func TestAFailingLookNeverReplacesAnExistingDisk(t *testing.T) {
	needTools(t)
	ctx := context.Background()
	d := &Driver{Dir: t.TempDir()}
	key := keyFile(t, "tenant-a-key-0123456789abcdef0123456789")
	dk := disk("data", "64Mi", apps.VMDiskSource{})
	vol, err := ensure(d, dk, key, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := qemuIO(vol.Path, key, "write -P 0x5a 0 1M"); err != nil {
		t.Fatal(err)
	}
	before := checksum(t, vol.Path)

	// An I/O error is not "absent": the error is reported and nothing is made.
	failStat(t, vol.Path, syscall.EIO)
	if _, err := ensure(d, dk, key, nil); err == nil || errors.Is(err, storage.ErrNotFound) || !strings.Contains(err.Error(), "input/output error") {
		t.Errorf("Ensure with stat failing with EIO: %v", err)
	}
	if _, err := d.Create(ctx, storage.Request{Disk: dk, Key: key}); err == nil || errors.Is(err, storage.ErrExists) || !strings.Contains(err.Error(), "input/output error") {
		t.Errorf("Create with stat failing with EIO: %v", err)
	}
	// Even a stat that wrongly says "absent" cannot make Create replace the disk.
	failStat(t, vol.Path, syscall.ENOENT)
	if _, err := d.Create(ctx, storage.Request{Disk: dk, Key: key}); !errors.Is(err, storage.ErrExists) {
		t.Errorf("Create over an existing disk: %v, want ErrExists", err)
	}
	if after := checksum(t, vol.Path); after != before {
		t.Error("the existing disk's bytes changed")
	}
	if err := qemuIO(vol.Path, key, "read -P 0x5a 0 1M"); err != nil {
		t.Errorf("the existing disk's data: %v", err)
	}
	if left, _ := filepath.Glob(filepath.Join(d.Dir, dk.Namespace, scratchPrefix+"*")); len(left) != 0 {
		t.Errorf("scratch left behind: %v", left)
	}
}

func TestWhatACrashLeftIsRemovedButNotWhatIsBeingMade(t *testing.T) {
	d := &Driver{Dir: t.TempDir()}
	ns := filepath.Join(d.Dir, "tenant-a")
	// A creation that crashed: its scratch directory's lock file is there, nobody holds it.
	crashed := filepath.Join(ns, scratchPrefix+"123")
	if err := os.MkdirAll(crashed, 0o700); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(crashed, ".lock"), nil, 0o600)
	os.WriteFile(filepath.Join(crashed, "disk.qcow2"), []byte("half"), 0o600)
	// A creation running now holds its lock.
	running, err := storage.NewScratch(ns, scratchPrefix)
	if err != nil {
		t.Fatal(err)
	}
	defer running.Close()
	os.WriteFile(running.Path("disk.qcow2"), []byte("busy"), 0o600)
	// Earlier versions' temporary files, made in place.
	legacy := []string{"a.1234abcd.qcow2.creating", "a.1234abcd.qcow2.creating.download", ".template-123.creating"}
	for _, f := range legacy {
		os.WriteFile(filepath.Join(ns, f), []byte("half"), 0o600)
	}
	if _, err := d.List(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(crashed); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("a crashed creation's scratch is still there: %v", err)
	}
	for _, f := range legacy {
		if _, err := os.Stat(filepath.Join(ns, f)); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("an earlier version's temporary file %s is still there: %v", f, err)
		}
	}
	if _, err := os.Stat(running.Path("disk.qcow2")); err != nil {
		t.Errorf("a running creation's scratch was removed: %v", err)
	}
}

func TestACloneFindsItsSourceByUIDNeverByName(t *testing.T) {
	needTools(t)
	d := &Driver{Dir: t.TempDir()}
	key := keyFile(t, "tenant-a-key-0123456789abcdef0123456789")
	bak := disk("db.bak", "64Mi", apps.VMDiskSource{})
	vol, err := ensure(d, bak, key, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := qemuIO(vol.Path, key, "write -P 0xbb 0 1M"); err != nil {
		t.Fatal(err)
	}
	// "db" exists as an object (the agent resolved it) but has no data: nothing is cloned, not
	// db.bak's data above all.
	db := disk("db", "64Mi", apps.VMDiskSource{})
	db.UID = types.UID("0f1e2d3c-new-db")
	cp := disk("copy", "64Mi", apps.VMDiskSource{Disk: &apps.DiskSource{Name: "db"}})
	if _, err := ensureFrom(d, cp, key, db); err == nil || !strings.Contains(err.Error(), "disk db to clone has no data on this node") {
		t.Errorf("clone of a disk without data: %v", err)
	}
	if m, _ := filepath.Glob(filepath.Join(d.Dir, "tenant-a", "copy.*")); len(m) != 0 {
		t.Errorf("a failed clone made %v", m)
	}
	// A source that was not resolved is refused rather than looked up by name.
	if _, err := ensureFrom(d, cp, key, nil); err == nil || !strings.Contains(err.Error(), "not resolved") {
		t.Errorf("clone without a resolved source: %v", err)
	}
	// Cloning an existing disk copies its bytes.
	cp2 := disk("copy2", "64Mi", apps.VMDiskSource{Disk: &apps.DiskSource{Name: "db.bak"}})
	c, err := ensureFrom(d, cp2, key, bak)
	if err != nil {
		t.Fatal(err)
	}
	if err := qemuIO(c.Path, key, "read -P 0xbb 0 1M"); err != nil {
		t.Errorf("the clone lost the source's data: %v", err)
	}
}
