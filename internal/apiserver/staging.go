package apiserver

import (
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"syscall"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"kumo.dev/kumo/internal/storage/importer"
)

// DefaultUploadStagingLimit is the most bytes staged uploads (disks and golden images, every
// tenant together) may hold on the server unless kumod server --upload-staging-limit says
// otherwise.
const DefaultUploadStagingLimit = int64(64) << 30

// stagingFloor is the free space an upload never takes from the staging directory's filesystem
// (which may be etcd's): below it uploads are refused whatever the limit.
const stagingFloor = int64(2) << 30

// stagingBudget bounds the bytes under the staging directory: the staged uploads waiting for a
// node, plus what uploads in progress have written so far (decompressed plaintext, then its
// sealed copy). Every write of an upload is charged before it reaches the disk; an upload that
// would go past the limit stops with 507 Insufficient Storage and removes what it wrote.
type stagingBudget struct {
	dir   string
	limit int64
	// floor is the free space kept on the filesystem.
	floor int64

	mu sync.Mutex
	// settled is the size of the staged files, measured when an upload starts and grown by
	// uploads that finish; inflight is what running uploads have charged.
	settled, inflight int64
}

func newStagingBudget(dir string, limit int64) *stagingBudget {
	if limit <= 0 {
		limit = DefaultUploadStagingLimit
	}
	return &stagingBudget{dir: dir, limit: limit, floor: stagingFloor}
}

// stagedBytes sums the sizes of the staged uploads (not those being received: they are in flight).
func stagedBytes(dir string) (int64, error) {
	var total int64
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if d.IsDir() || strings.HasSuffix(d.Name(), receivingSuffix) {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		total += info.Size()
		return nil
	})
	return total, err
}

// begin starts an upload: it measures what is staged and refuses when the staging area or its
// filesystem is already full.
func (b *stagingBudget) begin() (*stagingCharge, error) {
	staged, err := stagedBytes(b.dir)
	if err != nil {
		return nil, fmt.Errorf("measure the staged uploads under %s: %w", b.dir, err)
	}
	var st syscall.Statfs_t
	if err := syscall.Statfs(b.dir, &st); err != nil {
		return nil, fmt.Errorf("free space of %s: %w", b.dir, err)
	}
	free := int64(st.Bavail) * st.Bsize
	b.mu.Lock()
	defer b.mu.Unlock()
	b.settled = staged
	if free < b.floor {
		return nil, insufficientStorage(fmt.Sprintf("the upload staging directory's filesystem has %s free, less than the %s kept free for the server (and etcd); try again once staged uploads have been consumed",
			quantity(free), quantity(b.floor)))
	}
	if b.settled+b.inflight >= b.limit {
		return nil, b.full()
	}
	return &stagingCharge{b: b, free: free - b.floor}, nil
}

func (b *stagingBudget) full() error {
	return insufficientStorage(fmt.Sprintf("the upload staging area is full: %s of %s (kumod server --upload-staging-limit) hold uploads not yet consumed by nodes or in progress; try again later",
		quantity(b.settled+b.inflight), quantity(b.limit)))
}

// stagingCharge is one upload's share of the budget.
type stagingCharge struct {
	b       *stagingBudget
	free    int64
	charged int64
}

// charge takes n more bytes, or fails with 507 when the limit (or the filesystem's free space
// above the floor, as measured at the start) would be passed.
func (c *stagingCharge) charge(n int64) error {
	b := c.b
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.settled+b.inflight+n > b.limit {
		return b.full()
	}
	if c.charged+n > c.free {
		return insufficientStorage(fmt.Sprintf("the upload staging directory's filesystem would have less than %s free; try again later", quantity(b.floor)))
	}
	b.inflight += n
	c.charged += n
	return nil
}

// release gives back n bytes (a plaintext removed after sealing).
func (c *stagingCharge) release(n int64) {
	c.b.mu.Lock()
	defer c.b.mu.Unlock()
	n = min(n, c.charged)
	c.b.inflight -= n
	c.charged -= n
}

// end finishes the upload: what it charged is given back, and kept bytes (the staged file, 0 when
// it was refused) count as staged.
func (c *stagingCharge) end(kept int64) {
	c.b.mu.Lock()
	defer c.b.mu.Unlock()
	c.b.inflight -= c.charged
	c.b.settled += kept
	c.charged = 0
}

// limitFor narrows an upload's expansion limit: a write past the budget is refused by the
// charge; this only gives the error its reason sooner.
func (c *stagingCharge) importLimit(l importer.Limit) importer.Limit {
	l.Charge = c.charge
	return l
}

func insufficientStorage(msg string) error {
	return &apierrors.StatusError{ErrStatus: metav1.Status{
		Status: metav1.StatusFailure, Code: http.StatusInsufficientStorage, Reason: "InsufficientStorage", Message: msg,
	}}
}

// IsInsufficientStorage says whether err is the staging area's refusal.
func isInsufficientStorage(err error) bool {
	var se *apierrors.StatusError
	return errors.As(err, &se) && se.ErrStatus.Code == http.StatusInsufficientStorage
}

func quantity(n int64) string { return resource.NewQuantity(n, resource.BinarySI).String() }
