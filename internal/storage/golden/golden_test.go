package golden

import (
	"context"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"kumo.dev/kumo/internal/storage"
)

func write(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func fill(content string) func(context.Context, *storage.Scratch, string) error {
	return func(_ context.Context, _ *storage.Scratch, dst string) error {
		return os.WriteFile(dst, []byte(content), 0o644)
	}
}

func TestAnObjectShadowsTheOperatorsFileAndStaleCopiesGo(t *testing.T) {
	objs, synced := map[string]string{}, false
	c := &Catalog{Dir: t.TempDir(), ImagesDir: t.TempDir(), Objects: func() (map[string]string, bool) { return objs, synced }}
	write(t, filepath.Join(c.ImagesDir, "tiny.qcow2"), "operator tiny")
	write(t, filepath.Join(c.ImagesDir, "debian.qcow2"), "operator debian")

	if img, ok := c.Golden("tiny"); !ok || img.Managed || img.ID[0] != 'f' {
		t.Errorf("operator image: %+v %v", img, ok)
	}
	// A GoldenImage named debian exists but is not cached yet: the operator's file is not it.
	objs["debian"] = "uid-1"
	if _, ok := c.Golden("debian"); ok {
		t.Error("an image not cached yet was served from the operator's file of the same name")
	}
	if got := c.Names(); !reflect.DeepEqual(got, []string{"tiny"}) {
		t.Errorf("Names() = %v", got)
	}
	if err := c.Cache(context.Background(), "debian", "uid-1", fill("object debian 1")); err != nil {
		t.Fatal(err)
	}
	img, ok := c.Golden("debian")
	if data, _ := os.ReadFile(img.Path); !ok || !img.Managed || img.ID != "uid-1" || string(data) != "object debian 1" {
		t.Errorf("cached image: %+v %v %q", img, ok, data)
	}
	// A copy that exists is never replaced.
	if err := c.Cache(context.Background(), "debian", "uid-1", fill("other")); err != nil {
		t.Fatal(err)
	}
	if data, _ := os.ReadFile(img.Path); string(data) != "object debian 1" {
		t.Errorf("a cached copy was replaced: %q", data)
	}
	// Imported again; a crash left a download behind.
	objs["debian"] = "uid-2"
	write(t, filepath.Join(c.Dir, scratchPrefix+"x", ".lock"), "")
	write(t, filepath.Join(c.Dir, scratchPrefix+"x", "download"), "half")
	if removed, err := c.Prune(); err != nil || len(removed) != 0 {
		t.Errorf("Prune while the object list is unknown removed %v (%v)", removed, err)
	}
	synced = true
	removed, err := c.Prune()
	if err != nil || !reflect.DeepEqual(removed, []string{"debian.uid-1.qcow2"}) {
		t.Errorf("Prune() = %v, %v", removed, err)
	}
	if _, err := os.Stat(filepath.Join(c.Dir, scratchPrefix+"x")); !os.IsNotExist(err) {
		t.Errorf("a crashed download's scratch is still there: %v", err)
	}
	if _, ok := c.Golden("debian"); ok {
		t.Error("the old copy is served for the new import")
	}
	// Deleted: the operator's file shows again; Kumo never removed it.
	delete(objs, "debian")
	if got := c.Names(); !reflect.DeepEqual(got, []string{"debian", "tiny"}) {
		t.Errorf("Names() = %v", got)
	}
}

func TestGoneOnlyWhenKnownAbsent(t *testing.T) {
	objs, synced := map[string]string{"debian": "uid-1"}, false
	c := &Catalog{Dir: t.TempDir(), ImagesDir: t.TempDir(), Objects: func() (map[string]string, bool) { return objs, synced }}
	write(t, filepath.Join(c.ImagesDir, "tiny.qcow2"), "operator tiny")
	if c.Gone("deleted") {
		t.Error("gone while the object list is not known")
	}
	synced = true
	if c.Gone("debian") {
		t.Error("an image whose object exists but is not cached yet is not gone")
	}
	if c.Gone("tiny") {
		t.Error("an operator's image is not gone")
	}
	if !c.Gone("deleted") {
		t.Error("no object, no file: gone")
	}
}
