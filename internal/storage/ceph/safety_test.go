package ceph

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/types"

	"kumo.dev/kumo/internal/storage"
	apps "kumo.dev/kumo/pkg/apis/apps/v1alpha1"
)

// exportSum is the SHA-256 of an image's stored (encrypted) bytes.
func exportSum(t *testing.T, d *Driver, image string) [32]byte {
	t.Helper()
	out := filepath.Join(t.TempDir(), "export")
	if b, err := exec.Command("rbd", "-c", d.Conf, "--id", d.User, "export", "--no-progress", image, out).CombinedOutput(); err != nil {
		t.Fatalf("rbd export %s: %v %s", image, err, b)
	}
	data, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return sha256.Sum256(data)
}

// fakeRBD makes `rbd info IMAGE` run script (sh) instead, until the test ends; other commands
// run.
func fakeRBD(t *testing.T, image, script string) {
	orig := rbdCommand
	rbdCommand = func(ctx context.Context, name string, args ...string) *exec.Cmd {
		if len(args) > 0 && args[len(args)-1] == image && strings.Contains(strings.Join(args, " "), " info ") {
			return exec.CommandContext(ctx, "sh", "-c", script)
		}
		return orig(ctx, name, args...)
	}
	t.Cleanup(func() { rbdCommand = orig })
}

func TestAFailingRBDInfoNeverRemovesAnExistingImage(t *testing.T) {
	d := driver(t)
	ns := fmt.Sprintf("tenant-safe-%d", time.Now().UnixNano())
	key := keyFile(t, "tenant-safe-key-0123456789abcdef0123")
	dk := disk(ns, "data", "64Mi", apps.VMDiskSource{})
	vol, err := ensure(d, dk, key)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Delete(context.Background(), ns, storage.ObjectName(dk)) })
	if out, err := qemuTool(key, d, vol.RBD, "qemu-io", "-c", "write -P 0x5a 0 1M"); err != nil {
		t.Fatal(err, out)
	}
	before := exportSum(t, d, spec(vol.RBD))

	// An I/O error, a crash of rbd, a cluster that does not answer: unknown, never "absent".
	for _, script := range []string{
		"echo 'rbd: error opening image data: (5) Input/output error' >&2; exit 5",
		"exit 1",
		"kill -9 $$",
	} {
		fakeRBD(t, spec(vol.RBD), script)
		if _, err := ensure(d, dk, key); err == nil || errors.Is(err, storage.ErrNotFound) {
			t.Errorf("Ensure with `rbd info` failing (%s): %v", script, err)
		}
		if _, err := d.Create(context.Background(), storage.Request{Disk: dk, Key: key}); err == nil || errors.Is(err, storage.ErrExists) {
			t.Errorf("Create with `rbd info` failing (%s): %v", script, err)
		}
	}
	fakeRBD(t, spec(vol.RBD), "sleep 60")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	if _, err := storage.Ensure(ctx, d, storage.Request{Disk: dk, Key: key}); err == nil || errors.Is(err, storage.ErrNotFound) {
		t.Errorf("Ensure with `rbd info` timing out: %v", err)
	}
	cancel()
	// `rbd info` wrongly saying "absent" (exit 2): the clone finds the image there (EEXIST) and
	// nothing is removed — before, the rollback removed the existing image.
	fakeRBD(t, spec(vol.RBD), "echo 'rbd: error opening image: (2) No such file or directory' >&2; exit 2")
	if _, err := d.Create(context.Background(), storage.Request{Disk: dk, Key: key}); !errors.Is(err, storage.ErrExists) {
		t.Errorf("Create over an existing image: %v, want ErrExists", err)
	}
	if _, err := ensure(d, dk, key); err == nil {
		t.Error("Ensure with a lying `rbd info` succeeded")
	}
	rbdCommand = exec.CommandContext
	if after := exportSum(t, d, spec(vol.RBD)); after != before {
		t.Error("the existing image's bytes changed")
	}
	if out, err := qemuTool(key, d, vol.RBD, "qemu-io", "-c", "read -P 0x5a 0 1M"); err != nil {
		t.Errorf("the existing image's data: %v %s", err, out)
	}
}

func TestACloneFindsItsSourceByUIDNeverByName(t *testing.T) {
	d := driver(t)
	ctx := context.Background()
	ns := fmt.Sprintf("tenant-clone-%d", time.Now().UnixNano())
	key := keyFile(t, "tenant-clone-key-0123456789abcdef012")
	// db.bak exists; so does the data of a deleted "db" not yet collected (another UID).
	bak := disk(ns, "db.bak", "64Mi", apps.VMDiskSource{})
	old := disk(ns, "db", "64Mi", apps.VMDiskSource{})
	old.UID = types.UID("0ld0ld00-deleted")
	for pattern, dk := range map[string]*apps.VMDisk{"0xbb": bak, "0xdd": old} {
		vol, err := ensure(d, dk, key)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { d.Delete(ctx, ns, storage.ObjectName(dk)) })
		if out, err := qemuTool(key, d, vol.RBD, "qemu-io", "-c", "write -P "+pattern+" 0 1M"); err != nil {
			t.Fatal(err, out)
		}
	}
	// The "db" that exists now has no image: the clone fails and makes nothing.
	db := disk(ns, "db", "64Mi", apps.VMDiskSource{})
	db.UID = types.UID("11112222-new")
	cp := disk(ns, "copy", "64Mi", apps.VMDiskSource{Disk: &apps.DiskSource{Name: "db"}})
	if _, err := ensure(d, cp, key, db); err == nil || !strings.Contains(err.Error(), "disk db to clone has no RBD image") {
		t.Errorf("clone of a disk without an image: %v", err)
	}
	if _, err := d.Open(ctx, cp, key); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("a failed clone left an image: %v", err)
	}
	// Cloning an existing disk copies its bytes.
	cp2 := disk(ns, "copy2", "64Mi", apps.VMDiskSource{Disk: &apps.DiskSource{Name: "db.bak"}})
	c, err := ensure(d, cp2, key, bak)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Delete(ctx, ns, storage.ObjectName(cp2)) })
	if out, err := qemuTool(key, d, c.RBD, "qemu-io", "-c", "read -P 0xbb 0 1M"); err != nil {
		t.Errorf("the clone lost the source's data: %v %s", err, out)
	}
}

func TestABaseIsMadeFromTheCurrentContentOfAGoldenImage(t *testing.T) {
	d := driver(t)
	ctx := context.Background()
	ns := fmt.Sprintf("tenant-reimport-%d", time.Now().UnixNano())
	key := keyFile(t, "tenant-reimp-key-0123456789abcdef012")
	src := apps.VMDiskSource{Image: &apps.ImageSource{Name: "os"}}
	// Registered first, so it runs after the disks are deleted.
	t.Cleanup(func() {
		all, _ := d.images(ctx)
		for _, img := range all[ns] {
			if isBase(img) {
				d.removeBase(ctx, d.Pool+"/"+ns+"/"+img)
			}
		}
	})
	g := d.Golden.(*testGolden)
	for i, pattern := range []string{"0x11", "0x77"} {
		// The image "os" imported (again): a new ID, new content.
		g.ids["os"] = fmt.Sprintf("u%d", i)
		path := g.path("os")
		if out, err := exec.Command("qemu-img", "create", "-q", "-f", "qcow2", path, "16M").CombinedOutput(); err != nil {
			t.Fatal(err, string(out))
		}
		if out, err := exec.Command("qemu-io", "-f", "qcow2", path, "-c", "write -P "+pattern+" 0 1M").CombinedOutput(); err != nil {
			t.Fatal(err, string(out))
		}
		dk := disk(ns, fmt.Sprintf("sys%d", i), "64Mi", src)
		vol, err := ensure(d, dk, key)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { d.Delete(ctx, ns, storage.ObjectName(dk)) })
		if out, err := qemuTool(key, d, vol.RBD, "qemu-io", "-c", "read -P "+pattern+" 0 1M"); err != nil {
			t.Errorf("disk made after import %d does not hold its content: %v %s", i, err, out)
		}
	}
}

func TestABaseACrashLeftIsRemovedOnceNoBuildCanStillRun(t *testing.T) {
	d := driver(t)
	ctx := context.Background()
	ns := fmt.Sprintf("tenant-orphan-%d", time.Now().UnixNano())
	key := keyFile(t, "tenant-orphan-key-0123456789abcdef01")
	// A disk keeps the namespace's bases from being pruned as unused.
	dk := disk(ns, "data", "16Mi", apps.VMDiskSource{})
	if _, err := ensure(d, dk, key); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Delete(ctx, ns, storage.ObjectName(dk)) })
	orphan := &storage.RBDImage{Pool: d.Pool, Namespace: ns, Image: blankBase + "-deadbeef.tmp0123abcd"}
	if _, err := d.rbd(ctx, "create", "--size", "4M", spec(orphan)); err != nil {
		t.Fatal(err)
	}
	if _, err := d.rbd(ctx, "snap", "create", "--no-progress", spec(orphan)+"@"+baseSnap); err != nil {
		t.Fatal(err)
	}
	if _, err := d.rbd(ctx, "snap", "protect", spec(orphan)+"@"+baseSnap); err != nil {
		t.Fatal(err)
	}
	if err := d.PruneBases(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := d.rawSize(ctx, spec(orphan)); err != nil {
		t.Errorf("a base under construction was removed: %v", err)
	}
	now = func() time.Time { return time.Now().Add(orphanAge + time.Minute) }
	defer func() { now = time.Now }()
	if err := d.PruneBases(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := d.rawSize(ctx, spec(orphan)); !isAbsent(err) {
		t.Errorf("a base a crash left is still there: %v", err)
	}
	if _, err := d.Open(ctx, dk, key); err != nil {
		t.Errorf("the disk: %v", err)
	}
}
