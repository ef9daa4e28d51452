package ceph

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os/exec"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"kumo.dev/kumo/internal/storage"
	"kumo.dev/kumo/internal/storage/importer"
	apps "kumo.dev/kumo/pkg/apis/apps/v1alpha1"
)

// lsImages lists the images of a tenant namespace, bases included.
func lsImages(t *testing.T, d *Driver, ns string) []string {
	t.Helper()
	all, err := d.images(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return all[ns]
}

func creatingImages(images []string) []string {
	var out []string
	for _, i := range images {
		if isCreating(i) {
			out = append(out, i)
		}
	}
	return out
}

// An agent killed in the middle of an import (no undo runs) leaves no image under the disk's
// name: the restarted agent finds the disk absent and imports it again, never reporting a
// half-filled image Ready. What the killed build left is not a disk to garbage collection and is
// removed once no build can still be running.
func TestAnImportKilledHalfwayLeavesNoDisk(t *testing.T) {
	d := driver(t)
	d.Networks = importer.Networks{Allowed: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}} // the test's server
	ns := fmt.Sprintf("tenant-killed-%d", time.Now().UnixNano())
	key := keyFile(t, "tenant-killed-key-0123456789abcdef01")
	const size = 8 << 20
	var complete atomic.Bool // false: the server sends 1 MiB of the image, then stalls
	half := make(chan struct{}, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.Itoa(size))
		w.Header().Set("Content-Type", "application/octet-stream")
		data := make([]byte, 1<<20)
		for i := range data {
			data[i] = 0x5a
		}
		for i := 0; i < size>>20; i++ {
			if _, err := w.Write(data); err != nil {
				return
			}
			if !complete.Load() {
				w.(http.Flusher).Flush()
				select {
				case half <- struct{}{}:
				default:
				}
				<-r.Context().Done()
				return
			}
		}
	}))
	defer srv.Close()
	dk := disk(ns, "imported", "16Mi", apps.VMDiskSource{HTTP: &apps.HTTPSource{URL: srv.URL + "/disk.raw"}})
	final := storage.ObjectName(dk)
	t.Cleanup(func() { d.Delete(context.Background(), ns, final) })

	// The kill: no undo runs (every rbd rm is a no-op while the build is cut short).
	orig := rbdCommand
	rbdCommand = func(ctx context.Context, name string, args ...string) *exec.Cmd {
		if strings.Contains(" "+strings.Join(args, " ")+" ", " rm ") {
			return exec.CommandContext(ctx, "true")
		}
		return orig(ctx, name, args...)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := storage.Ensure(ctx, d, storage.Request{Disk: dk, Key: key})
		done <- err
	}()
	<-half
	// Wait until the image being filled exists, then kill the build.
	deadline := time.Now().Add(2 * time.Minute)
	for {
		var disks []string
		for _, i := range lsImages(t, d, ns) {
			if !isBase(i) {
				disks = append(disks, i)
			}
		}
		if len(disks) > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the import made no image within 2 minutes")
		}
		time.Sleep(100 * time.Millisecond)
	}
	cancel()
	if err := <-done; err == nil {
		t.Fatal("the import cut short succeeded")
	}
	rbdCommand = orig

	// The restarted agent: the disk is absent, never a half-filled image.
	if _, err := d.Open(context.Background(), dk, key); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("Open after an import killed halfway: err = %v, want ErrNotFound (images: %v)", err, lsImages(t, d, ns))
	}
	left := creatingImages(lsImages(t, d, ns))
	if len(left) != 1 || !strings.HasPrefix(left[0], final+creatingInfix) {
		t.Fatalf("images under construction after the kill: %v, want one for %s", left, final)
	}
	listed, err := d.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, i := range listed[ns] {
		if isCreating(i) {
			t.Errorf("List shows the unfinished image %s as a disk (garbage collection would take it for one)", i)
		}
	}
	if creatingImages(lsImages(t, d, ns)) == nil {
		t.Errorf("List removed an unfinished image younger than any build")
	}

	// The agent imports it again, whole.
	complete.Store(true)
	vol, err := ensure(d, dk, key)
	if err != nil {
		t.Fatal(err)
	}
	if out, err := qemuTool(key, d, vol.RBD, "qemu-io", "-c", "read -P 0x5a 0 8M", "-c", "read -P 0 8M 8M"); err != nil {
		t.Errorf("the disk imported again does not hold the image: %v %s", err, out)
	}

	// Once no build can still run, List removes what the killed one left, and only that.
	now = func() time.Time { return time.Now().Add(creatingAge + time.Minute) }
	defer func() { now = time.Now }()
	if _, err := d.List(context.Background()); err != nil {
		t.Fatal(err)
	}
	if left := creatingImages(lsImages(t, d, ns)); len(left) != 0 {
		t.Errorf("unfinished images still there after the sweep: %v", left)
	}
	if _, err := d.Open(context.Background(), dk, key); err != nil {
		t.Errorf("the disk after the sweep: %v", err)
	}
}

// When an image of the disk's name appears while the disk is built (another node made it), the
// finished build is not renamed over it: Create reports ErrExists, that image stays as it was and
// only the build's own image is removed.
func TestAnImageThatAppearsDuringTheBuildIsKept(t *testing.T) {
	d := driver(t)
	ctx := context.Background()
	ns := fmt.Sprintf("tenant-race-%d", time.Now().UnixNano())
	key := keyFile(t, "tenant-race-key-0123456789abcdef0123")
	dk := disk(ns, "data", "16Mi", apps.VMDiskSource{})
	img := d.image(dk)
	t.Cleanup(func() { d.Delete(ctx, ns, img.Image) })
	createHook = func(ctx context.Context, tmp string) error {
		_, err := d.rbd(ctx, "create", "--size", "4M", spec(img))
		return err
	}
	defer func() { createHook = nil }()
	_, err := d.Create(ctx, storage.Request{Disk: dk, Key: key})
	if !errors.Is(err, storage.ErrExists) {
		t.Fatalf("Create when the image appeared meanwhile: err = %v, want ErrExists", err)
	}
	if raw, err := d.rawSize(ctx, spec(img)); err != nil || raw != 4<<20 {
		t.Errorf("the image that appeared: size %d, err %v; want it untouched (4 MiB)", raw, err)
	}
	if left := creatingImages(lsImages(t, d, ns)); len(left) != 0 {
		t.Errorf("the build's own image was not removed: %v", left)
	}
}
