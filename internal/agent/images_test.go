package agent

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/cache"

	"kumo.dev/kumo/internal/storage"
	"kumo.dev/kumo/internal/storage/golden"
	"kumo.dev/kumo/internal/storage/importer"
	"kumo.dev/kumo/internal/storage/local"
	apps "kumo.dev/kumo/pkg/apis/apps/v1alpha1"
	kumo "kumo.dev/kumo/pkg/apis/kumo/v1alpha1"
)

// storeInformer is an informer whose store the test fills (synced from the start).
type storeInformer struct {
	cache.SharedIndexInformer
	store cache.Store
}

func (s storeInformer) GetStore() cache.Store { return s.store }
func (s storeInformer) HasSynced() bool       { return true }

func goldenImage(name, uid, url string) *kumo.GoldenImage {
	return &kumo.GoldenImage{ObjectMeta: metav1.ObjectMeta{Name: name, UID: types.UID(uid), ResourceVersion: uid},
		Spec:   kumo.GoldenImageSpec{Source: kumo.GoldenImageSource{HTTP: &kumo.GoldenImageHTTP{URL: url}}},
		Status: kumo.GoldenImageStatus{Phase: kumo.GoldenImageReady}}
}

func qemuIO(t *testing.T, path string, key storage.Key, cmd string) error {
	t.Helper()
	out, err := exec.Command("qemu-io", "--object", "secret,id=s,file="+key.File, "--image-opts",
		"driver=qcow2,file.filename="+path+",encrypt.key-secret=s", "-c", cmd).CombinedOutput()
	if err == nil && (strings.Contains(string(out), "failed") || strings.Contains(string(out), "Pattern verification")) {
		return &exec.ExitError{Stderr: out}
	}
	return err
}

func TestGoldenImageImportedAgainGivesNewDisksTheNewContent(t *testing.T) {
	for _, tool := range []string{"qemu-img", "qemu-io", "prlimit"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed", tool)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// Two imports of "os" with different content.
	srcDir := t.TempDir()
	for name, pattern := range map[string]string{"v1.qcow2": "0x11", "v2.qcow2": "0x22"} {
		p := filepath.Join(srcDir, name)
		if out, err := exec.Command("qemu-img", "create", "-q", "-f", "qcow2", p, "16M").CombinedOutput(); err != nil {
			t.Fatal(err, string(out))
		}
		if out, err := exec.Command("qemu-io", "-f", "qcow2", p, "-c", "write -P "+pattern+" 0 1M").CombinedOutput(); err != nil {
			t.Fatal(err, string(out))
		}
	}
	srv := httptest.NewServer(http.FileServer(http.Dir(srcDir)))
	defer srv.Close()

	store := cache.NewStore(cache.MetaNamespaceKeyFunc)
	inf := storeInformer{store: store}
	data := t.TempDir()
	cat := &golden.Catalog{Dir: filepath.Join(data, "golden"), ImagesDir: filepath.Join(data, "images")}
	a := &Agent{opts: Options{Node: "n1"}, images: inf, golden: cat,
		imageNets: importer.Networks{Allowed: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}}, local: &local.Driver{Dir: filepath.Join(data, "disks"), Golden: cat}}
	cat.Objects = a.goldenObjects
	keyPath := filepath.Join(t.TempDir(), "key")
	os.WriteFile(keyPath, []byte("tenant-key-0123456789abcdef0123456789"), 0o600)
	key := storage.Key{File: keyPath}
	newDisk := func(name string) storage.Volume {
		t.Helper()
		q := resource.MustParse("64Mi")
		d := &apps.VMDisk{ObjectMeta: metav1.ObjectMeta{Namespace: "tenant-a", Name: name, UID: types.UID("uid-" + name)},
			Spec: apps.VMDiskSpec{Storage: &q, StorageClass: apps.StorageLocal, Source: apps.VMDiskSource{Image: &apps.ImageSource{Name: "os"}}}}
		vol, err := storage.Ensure(ctx, a.local, storage.Request{Disk: d, Key: key})
		if err != nil {
			t.Fatalf("disk %s from golden image os: %v", name, err)
		}
		return vol
	}

	g1 := goldenImage("os", "11111111-first", srv.URL+"/v1.qcow2")
	store.Add(g1)
	a.cacheImages(ctx)
	if got := a.local.Images(); !reflect.DeepEqual(got, []string{"os"}) {
		t.Fatalf("images advertised after the first import: %v", got)
	}
	first := newDisk("first")
	if err := qemuIO(t, first.Path, key, "read -P 0x11 0 1M"); err != nil {
		t.Fatalf("disk made after the first import: %v", err)
	}

	// "os" deleted and imported again with other content: a new UID.
	g2 := goldenImage("os", "22222222-second", srv.URL+"/v2.qcow2")
	store.Delete(g1)
	store.Add(g2)
	a.cacheImages(ctx)
	if _, err := os.Stat(cat.CachePath("os", string(g1.UID))); !os.IsNotExist(err) {
		t.Errorf("the copy of the replaced image is still cached: %v", err)
	}
	second := newDisk("second")
	if err := qemuIO(t, second.Path, key, "read -P 0x22 0 1M"); err != nil {
		t.Errorf("disk made after the image was imported again does not hold the new content: %v", err)
	}
	if err := qemuIO(t, first.Path, key, "read -P 0x11 0 1M"); err != nil {
		t.Errorf("the disk made from the first import lost its content: %v", err)
	}

	// Deleted: the copy goes, the node stops advertising the image, disks keep their content.
	store.Delete(g2)
	a.cacheImages(ctx)
	if _, err := os.Stat(cat.CachePath("os", string(g2.UID))); !os.IsNotExist(err) {
		t.Errorf("the copy of a deleted image is still cached: %v", err)
	}
	if got := a.local.Images(); len(got) != 0 {
		t.Errorf("images advertised after the image was deleted: %v", got)
	}
	if err := a.local.PruneBases(ctx); err != nil {
		t.Fatal(err)
	}
	if err := qemuIO(t, second.Path, key, "read -P 0x22 0 1M"); err != nil {
		t.Errorf("the disk lost its content once its image was deleted: %v", err)
	}
	// Once no disk uses them, the backing files go too.
	os.Remove(first.Path)
	os.Remove(second.Path)
	if err := a.local.PruneBases(ctx); err != nil {
		t.Fatal(err)
	}
	if left, _ := os.ReadDir(filepath.Join(data, "disks", ".bases")); len(left) != 0 {
		t.Errorf("backing files left once no disk uses them: %v", left)
	}
}

func TestACloneNeedsItsSourceDiskReady(t *testing.T) {
	disks := map[string]*apps.VMDisk{
		"pending": {ObjectMeta: metav1.ObjectMeta{Namespace: "tenant-a", Name: "pending"}, Status: apps.VMDiskStatus{Phase: apps.DiskPending}},
		"ready":   {ObjectMeta: metav1.ObjectMeta{Namespace: "tenant-a", Name: "ready", UID: "uid-ready"}, Status: apps.VMDiskStatus{Phase: apps.DiskReady}},
	}
	get := func(_ context.Context, ns, name string) (*apps.VMDisk, error) {
		if d, ok := disks[name]; ok && ns == "tenant-a" {
			return d, nil
		}
		return nil, apierrors.NewNotFound(schema.GroupResource{Resource: "vmdisks"}, name)
	}
	clone := func(src string) *apps.VMDisk {
		return &apps.VMDisk{ObjectMeta: metav1.ObjectMeta{Namespace: "tenant-a", Name: "c"}, Spec: apps.VMDiskSpec{Source: apps.VMDiskSource{Disk: &apps.DiskSource{Name: src}}}}
	}
	ctx := context.Background()
	if _, err := sourceDisk(ctx, get, clone("db")); !errors.Is(err, storage.ErrNoSource) || !strings.Contains(err.Error(), "source disk db") {
		t.Errorf("absent source: %v", err)
	}
	if _, err := sourceDisk(ctx, get, clone("pending")); err == nil || !strings.Contains(err.Error(), "source disk pending is not ready") {
		t.Errorf("source not ready: %v", err)
	}
	if src, err := sourceDisk(ctx, get, clone("ready")); err != nil || src.UID != "uid-ready" {
		t.Errorf("ready source: %v %v", src, err)
	}
	if src, err := sourceDisk(ctx, get, &apps.VMDisk{}); err != nil || src != nil {
		t.Errorf("not a clone: %v %v", src, err)
	}
}
