// Package golden keeps a node's golden images: the copies of the API's GoldenImage objects the
// agent downloaded, keyed by the object's UID, and the images the node's operator put in its
// images directory. A disk made from "debian" gets the content of the GoldenImage named debian
// that exists now: an image imported again under the same name is a new UID, hence a new copy,
// and the copy of the old one (and of a deleted one) is removed. Copies made from a golden
// image elsewhere (Ceph bases, local backing files) are keyed by the content's ID too.
package golden

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"kumo.dev/kumo/internal/storage"
)

// Catalog is the node's golden images.
type Catalog struct {
	// Dir holds the copies of GoldenImage objects as <name>.<uid>.qcow2. Kumo owns it.
	Dir string
	// ImagesDir holds images the node's operator provides as <name>.qcow2. Kumo never writes or
	// removes anything there. A GoldenImage object of the same name shadows such a file.
	ImagesDir string
	// Objects returns the UID of every GoldenImage object the API holds, by name. It must
	// return ok=false when it does not know (its cache is not synced yet): Prune then removes
	// nothing.
	Objects func() (uids map[string]string, ok bool)

	mu      sync.Mutex
	fileIDs map[string]fileID
}

var _ storage.GoldenImages = &Catalog{}

// scratchPrefix starts the scratch directories of downloads in Dir.
const scratchPrefix = ".caching-"

// CachePath is where the copy of a GoldenImage object lives.
func (c *Catalog) CachePath(name, uid string) string {
	return filepath.Join(c.Dir, name+"."+uid+".qcow2")
}

func (c *Catalog) objects() map[string]string {
	if c.Objects == nil {
		return nil
	}
	uids, _ := c.Objects()
	return uids
}

// Golden implements storage.GoldenImages.
func (c *Catalog) Golden(name string) (storage.GoldenImage, bool) {
	if uid, ok := c.objects()[name]; ok {
		path := c.CachePath(name, uid)
		if _, err := os.Stat(path); err != nil {
			return storage.GoldenImage{}, false // not downloaded yet (or unreadable): not here
		}
		return storage.GoldenImage{Name: name, Path: path, ID: uid[:min(8, len(uid))], Managed: true}, true
	}
	path := filepath.Join(c.ImagesDir, name+".qcow2")
	id, err := c.fileID(path)
	if err != nil {
		return storage.GoldenImage{}, false
	}
	return storage.GoldenImage{Name: name, Path: path, ID: id}, true
}

// Gone says whether the golden image name is known not to exist: the object list is known and
// has no GoldenImage of that name, and the node's images directory has no such file. A node
// that merely has not cached an image yet does not find it gone.
func (c *Catalog) Gone(name string) bool {
	if c.Objects == nil {
		return false
	}
	uids, ok := c.Objects()
	if !ok {
		return false
	}
	if _, exists := uids[name]; exists {
		return false
	}
	_, err := os.Stat(filepath.Join(c.ImagesDir, name+".qcow2"))
	return errors.Is(err, fs.ErrNotExist)
}

// Cached says whether the copy of a GoldenImage object is on the node.
func (c *Catalog) Cached(name, uid string) bool {
	_, err := os.Stat(c.CachePath(name, uid))
	return err == nil
}

// Names lists the golden images the node can make disks from, sorted: every GoldenImage object
// it holds a copy of, and every operator image no object shadows.
func (c *Catalog) Names() []string {
	objs := c.objects()
	seen := map[string]bool{}
	for name, uid := range objs {
		if c.Cached(name, uid) {
			seen[name] = true
		}
	}
	entries, _ := os.ReadDir(c.ImagesDir)
	for _, e := range entries {
		if name, ok := strings.CutSuffix(e.Name(), ".qcow2"); ok && !e.IsDir() {
			if _, shadowed := objs[name]; !shadowed {
				seen[name] = true
			}
		}
	}
	out := make([]string, 0, len(seen))
	for name := range seen {
		out = append(out, name)
	}
	sort.Strings(out)
	return out
}

// Cache brings the content of a GoldenImage object into the node's copy. fill writes the qcow2
// file at the path it is given (in a private scratch directory); the copy appears complete or
// not at all, and an existing copy is never replaced.
func (c *Catalog) Cache(ctx context.Context, name, uid string, fill func(ctx context.Context, scratch *storage.Scratch, dst string) error) error {
	s, err := storage.NewScratch(c.Dir, scratchPrefix)
	if err != nil {
		return err
	}
	defer s.Close()
	tmp := s.Path("image.qcow2")
	if err := fill(ctx, s, tmp); err != nil {
		return err
	}
	if err := syncFile(tmp); err != nil {
		return err
	}
	if err := os.Link(tmp, c.CachePath(name, uid)); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("put golden image %s in place: %w", name, err)
	}
	return nil
}

// Prune removes the copies of GoldenImage objects that no longer exist or were imported again
// under the same name (another UID), and the scratch directories of downloads a crash cut
// short. It returns the names of the files it removed. Nothing is removed while the object
// list is unknown.
func (c *Catalog) Prune() ([]string, error) {
	if c.Objects == nil {
		return nil, nil
	}
	objs, ok := c.Objects()
	if !ok {
		return nil, nil
	}
	if _, err := storage.SweepScratch(c.Dir, scratchPrefix); err != nil {
		return nil, err
	}
	entries, err := os.ReadDir(c.Dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var removed []string
	for _, e := range entries {
		stem, ok := strings.CutSuffix(e.Name(), ".qcow2")
		if e.IsDir() || !ok {
			continue
		}
		i := strings.LastIndexByte(stem, '.')
		if i <= 0 {
			continue
		}
		if name, uid := stem[:i], stem[i+1:]; objs[name] == uid {
			continue
		}
		if err := os.Remove(filepath.Join(c.Dir, e.Name())); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return removed, err
		}
		removed = append(removed, e.Name())
	}
	return removed, nil
}

// fileID is the content ID of an operator's image: "f" and a prefix of its SHA-256, remembered
// while the file's size and time stay the same.
func (c *Catalog) fileID(path string) (string, error) {
	st, err := os.Stat(path)
	if err != nil {
		return "", err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if id, ok := c.fileIDs[path]; ok && id.size == st.Size() && id.mtime.Equal(st.ModTime()) {
		return id.id, nil
	}
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("read golden image %s: %w", path, err)
	}
	id := "f" + hex.EncodeToString(h.Sum(nil))[:8]
	if c.fileIDs == nil {
		c.fileIDs = map[string]fileID{}
	}
	c.fileIDs[path] = fileID{size: st.Size(), mtime: st.ModTime(), id: id}
	return id, nil
}

type fileID struct {
	size  int64
	mtime time.Time
	id    string
}

func syncFile(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}
