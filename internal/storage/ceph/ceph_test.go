package ceph

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"kumo.dev/kumo/internal/storage"
	"kumo.dev/kumo/internal/storage/importer"
	"kumo.dev/kumo/internal/testceph"
	apps "kumo.dev/kumo/pkg/apis/apps/v1alpha1"
)

var cluster *testceph.Cluster

func TestMain(m *testing.M) {
	code := m.Run()
	if cluster != nil {
		if err := cluster.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			code = 1
		}
	}
	os.Exit(code)
}

// driver starts (once) the real test cluster and returns a driver on it whose golden images
// are in a fresh directory.
func driver(t *testing.T) *Driver {
	t.Helper()
	if testing.Short() {
		t.Skip("starts a real Ceph cluster; skipped with -short")
	}
	if cluster == nil {
		root, err := testceph.RepoRoot()
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		if cluster, err = testceph.Start(ctx, root); err != nil {
			t.Fatal(err)
		}
	}
	return &Driver{Conf: cluster.Conf, User: cluster.User, Pool: cluster.Pool, Golden: &testGolden{dir: t.TempDir(), ids: map[string]string{}}, ScratchDir: t.TempDir()}
}

// testGolden holds golden images as <dir>/<name>.<id>.qcow2, the current ID of each in ids.
type testGolden struct {
	dir string
	ids map[string]string
}

func (g *testGolden) path(name string) string {
	return filepath.Join(g.dir, name+"."+g.ids[name]+".qcow2")
}

func (g *testGolden) Golden(name string) (storage.GoldenImage, bool) {
	id, ok := g.ids[name]
	if _, err := os.Stat(g.path(name)); !ok || err != nil {
		return storage.GoldenImage{}, false
	}
	return storage.GoldenImage{Name: name, Path: g.path(name), ID: id, Managed: true}, true
}

// Gone: the test's catalog knows every image; one not in ids was deleted.
func (g *testGolden) Gone(name string) bool {
	_, ok := g.ids[name]
	return !ok
}

// ensure opens or creates a disk as the agent does (source: the resolved disk it clones).
func ensure(d *Driver, dk *apps.VMDisk, key storage.Key, source ...*apps.VMDisk) (storage.Volume, error) {
	req := storage.Request{Disk: dk, Key: key}
	if len(source) > 0 {
		req.Source = source[0]
	}
	return storage.Ensure(context.Background(), d, req)
}

func disk(ns, name, size string, src apps.VMDiskSource) *apps.VMDisk {
	q := resource.MustParse(size)
	return &apps.VMDisk{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: types.UID("uid-" + name + "-0123456789")},
		Spec: apps.VMDiskSpec{Source: src, Storage: &q, StorageClass: apps.StorageReplicated}}
}

func keyFile(t *testing.T, secret string) storage.Key {
	t.Helper()
	p := filepath.Join(t.TempDir(), "key")
	if err := os.WriteFile(p, []byte(secret), 0o600); err != nil {
		t.Fatal(err)
	}
	return storage.Key{File: p}
}

func qemuTool(key storage.Key, d *Driver, img *storage.RBDImage, tool string, args ...string) (string, error) {
	full := append([]string{"--object", "secret,id=s,file=" + key.File, "--image-opts", d.opts(img, "s")}, args...)
	if tool == "qemu-img" {
		full = append([]string{args[0], "--object", "secret,id=s,file=" + key.File, "--image-opts", d.opts(img, "s")}, args[1:]...)
	}
	out, err := exec.Command(tool, full...).CombinedOutput()
	if err == nil && strings.Contains(string(out), "failed") {
		err = fmt.Errorf("%s", out)
	}
	return string(out), err
}

// A golden image with recognisable data at its start, middle and last MiB.
func makeGolden(t *testing.T, d *Driver, name, id, size string) string {
	t.Helper()
	g := d.Golden.(*testGolden)
	g.ids[name] = id
	path := g.path(name)
	if out, err := exec.Command("qemu-img", "create", "-q", "-f", "qcow2", path, size).CombinedOutput(); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	q := resource.MustParse(size)
	last := q.Value() - 1<<20
	if out, err := exec.Command("qemu-io", "-f", "qcow2", path, "-c", "write -P 0x11 0 1M", "-c",
		fmt.Sprintf("write -P 0x22 %d 1M", last/2), "-c", fmt.Sprintf("write -P 0x33 %d 1M", last)).CombinedOutput(); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	return path
}

func TestDisksFromAGoldenImageAreClonesOfOneEncryptedTenantCopy(t *testing.T) {
	d := driver(t)
	ctx := context.Background()
	ns := fmt.Sprintf("tenant-gold-%d", time.Now().UnixNano())
	golden := makeGolden(t, d, "tiny", "g1", "40M")
	ids := d.Golden.(*testGolden).ids
	key, other := keyFile(t, "tenant-gold-key-0123456789abcdef0123"), keyFile(t, "tenant-other-key-0123456789abcdef012")

	src := apps.VMDiskSource{Image: &apps.ImageSource{Name: "tiny"}}
	a, b := disk(ns, "sys-a", "300Mi", src), disk(ns, "sys-b", "1Gi", src)
	for _, dk := range []*apps.VMDisk{a, b} {
		start := time.Now()
		vol, err := ensure(d, dk, key)
		if err != nil {
			t.Fatalf("Ensure %s: %v", dk.Name, err)
		}
		t.Logf("disk %s from golden image: %v", dk.Name, time.Since(start).Round(10*time.Millisecond))
		if vol.SizeBytes != dk.Spec.Storage.Value() || vol.RBD == nil {
			t.Errorf("%s: volume %+v", dk.Name, vol)
		}
		// The guest sees the golden image, then zeros, and every byte reads without error.
		out, err := qemuTool(key, d, vol.RBD, "qemu-img", "compare", "driver=qcow2,file.filename="+golden)
		if err != nil || !strings.Contains(out, "identical") {
			t.Errorf("%s differs from the golden image: %v %s", dk.Name, err, out)
		}
		size, _ := d.rawSize(ctx, spec(vol.RBD))
		if size-luksHeader < dk.Spec.Storage.Value() {
			t.Errorf("%s: image holds %d bytes under its header, want %d", dk.Name, size-luksHeader, dk.Spec.Storage.Value())
		}
		info, err := d.rbd(ctx, "info", spec(vol.RBD))
		if err != nil || !strings.Contains(info, "parent: "+cluster.Pool+"/"+ns+"/golden_tiny.g1-") {
			t.Errorf("%s is not a clone of the tenant's base: %v %s", dk.Name, err, info)
		}
		if out, err := qemuTool(other, d, vol.RBD, "qemu-img", "info"); err == nil {
			t.Errorf("another tenant's key opens %s: %s", dk.Name, out)
		}
	}
	all, err := d.images(ctx)
	if err != nil {
		t.Fatal(err)
	}
	listed, _ := d.List(ctx)
	if len(all[ns]) != 3 || len(listed[ns]) != 2 {
		t.Errorf("images %v, listed for garbage collection %v; want 2 disks and 1 base, the base not listed", all[ns], listed[ns])
	}

	// Writes stay in their clone.
	volA, _ := ensure(d, a, key)
	volB, _ := ensure(d, b, key)
	if out, err := qemuTool(key, d, volA.RBD, "qemu-io", "-c", "write -P 0x44 0 1M"); err != nil {
		t.Fatal(err, out)
	}
	if out, err := qemuTool(key, d, volB.RBD, "qemu-io", "-c", "read -P 0x11 0 1M"); err != nil {
		t.Errorf("a write to one clone shows in another: %v %s", err, out)
	}

	// Growing spec.storage grows the clone.
	a.Spec.Storage = resource.NewQuantity(512<<20, resource.BinarySI)
	if vol, err := ensure(d, a, key); err != nil || vol.SizeBytes != 512<<20 {
		t.Errorf("grow a clone: %v %+v", err, vol)
	}
	if out, err := qemuTool(key, d, volA.RBD, "qemu-io", "-c", fmt.Sprintf("write -P 0x55 %d 1M", 511<<20)); err != nil {
		t.Errorf("write at the grown end: %v %s", err, out)
	}

	// A golden image larger than the disk is refused with both sizes.
	small := disk(ns, "small", "20Mi", src)
	if _, err := ensure(d, small, key); !importer.IsRefused(err) || !strings.Contains(err.Error(), "20Mi") {
		t.Errorf("golden image larger than spec.storage: %v", err)
	}

	// A tenant created again under the same name has a new key: it gets its own base.
	again := disk(ns, "sys-again", "300Mi", src)
	volAgain, err := ensure(d, again, other)
	if err != nil {
		t.Fatalf("disk of a tenant created again with a new key: %v", err)
	}
	if out, err := qemuTool(other, d, volAgain.RBD, "qemu-img", "compare", "driver=qcow2,file.filename="+golden); err != nil || !strings.Contains(out, "identical") {
		t.Errorf("disk of a tenant created again differs from the golden image: %v %s", err, out)
	}
	if err := d.Delete(ctx, ns, storage.ObjectName(again)); err != nil {
		t.Fatal(err)
	}

	// The base stays while disks are cloned from it, even once the golden image is gone.
	delete(ids, "tiny")
	if err := d.PruneBases(ctx); err != nil {
		t.Fatal(err)
	}
	if all, _ := d.images(ctx); countBases(all[ns]) != 1 {
		t.Errorf("want only the base clones use kept: %v", all[ns])
	}
	for _, dk := range []*apps.VMDisk{a, b} {
		if err := d.Delete(ctx, ns, storage.ObjectName(dk)); err != nil {
			t.Fatal(err)
		}
	}
	if err := d.PruneBases(ctx); err != nil {
		t.Fatal(err)
	}
	if all, _ := d.images(ctx); len(all[ns]) != 0 {
		t.Errorf("left after the last clone and the golden image went: %v", all[ns])
	}
}

func TestOpticalDisksHoldTheirContentEncrypted(t *testing.T) {
	d := driver(t)
	ctx := context.Background()
	ns := fmt.Sprintf("tenant-iso-%d", time.Now().UnixNano())
	iso := filepath.Join(t.TempDir(), "cd.iso")
	if out, err := exec.Command("genisoimage", "-quiet", "-V", "KUMOCD", "-o", iso, "/etc/hostname").CombinedOutput(); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	// The ISO as a golden image (qcow2, as nodes cache them).
	g := d.Golden.(*testGolden)
	g.ids["cd"] = "c1"
	golden := g.path("cd")
	if out, err := exec.Command("qemu-img", "convert", "-f", "raw", "-O", "qcow2", iso, golden).CombinedOutput(); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	st, _ := os.Stat(iso)
	key := keyFile(t, "tenant-iso-key-0123456789abcdef01234")
	cd := disk(ns, "installer", "10Gi", apps.VMDiskSource{Image: &apps.ImageSource{Name: "cd"}})
	cd.Spec.Optical = true
	vol, err := ensure(d, cd, key)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Delete(ctx, ns, storage.ObjectName(cd)) })
	if want := (st.Size() + 1<<20 - 1) &^ (1<<20 - 1); vol.SizeBytes != want || vol.KeyFile == "" {
		t.Errorf("optical volume %+v, want the ISO's %d bytes in whole MiB (%d), encrypted", vol, st.Size(), want)
	}
	if out, err := qemuTool(key, d, vol.RBD, "qemu-img", "compare", "driver=qcow2,file.filename="+golden); err != nil || !strings.Contains(out, "identical") {
		t.Errorf("optical disk differs from the ISO: %v %s", err, out)
	}
	again, err := ensure(d, cd, key)
	if err != nil || again.SizeBytes != vol.SizeBytes {
		t.Errorf("Ensure of an existing optical disk: %v %+v", err, again)
	}
	export := filepath.Join(t.TempDir(), "export")
	_, err = d.rbd(ctx, "export", "--no-progress", spec(vol.RBD), export)
	raw, _ := os.ReadFile(export)
	if err != nil || len(raw) == 0 || strings.Contains(string(raw), "KUMOCD") {
		t.Errorf("the optical disk is stored in clear (or export failed: %v)", err)
	}
}

func TestBlankAndCopiedDisksAreClonesOfTheTenantsBlankBase(t *testing.T) {
	d := driver(t)
	ctx := context.Background()
	ns := fmt.Sprintf("tenant-blank-%d", time.Now().UnixNano())
	key := keyFile(t, "tenant-blank-key-0123456789abcdef012")
	blank := disk(ns, "blank", "100Mi", apps.VMDiskSource{})
	copied := disk(ns, "copied", "200Mi", apps.VMDiskSource{Disk: &apps.DiskSource{Name: "blank"}})
	vol, err := ensure(d, blank, key)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Delete(ctx, ns, storage.ObjectName(blank)) })
	if out, err := qemuTool(key, d, vol.RBD, "qemu-io", "-c", "read -P 0 0 100M", "-c", "write -P 0x66 0 1M", "-c", "write -P 0x77 99M 1M"); err != nil {
		t.Fatalf("a blank disk reads zeros and takes writes: %v %s", err, out)
	}
	start := time.Now()
	cvol, err := ensure(d, copied, key, blank)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("copy of a disk: %v", time.Since(start).Round(10*time.Millisecond))
	t.Cleanup(func() { d.Delete(ctx, ns, storage.ObjectName(copied)) })
	if out, err := qemuTool(key, d, cvol.RBD, "qemu-io", "-c", "read -P 0x66 0 1M", "-c", "read -P 0 1M 98M", "-c", "read -P 0x77 99M 1M", "-c", "read -P 0 100M 100M"); err != nil {
		t.Errorf("the copy differs from its source: %v %s", err, out)
	}
	for _, v := range []storage.Volume{vol, cvol} {
		if info, err := d.rbd(ctx, "info", spec(v.RBD)); err != nil || !strings.Contains(info, "parent: "+cluster.Pool+"/"+ns+"/golden_.blank-") {
			t.Errorf("%s is not a clone of the blank base: %v %s", v.RBD.Image, err, info)
		}
	}
}
