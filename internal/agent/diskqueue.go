package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"

	"kumo.dev/kumo/internal/storage"
	apps "kumo.dev/kumo/pkg/apis/apps/v1alpha1"
	kumo "kumo.dev/kumo/pkg/apis/kumo/v1alpha1"
	"kumo.dev/kumo/pkg/client"
)

// The disk queue prepares the disks the scheduler placed on this node (status.node) as soon as
// they are created, on workers of their own: an import never delays a VM, and a VM starts only
// from a disk that is already Ready. Deleting a disk (or moving it away) cancels its preparation,
// so a slow download stops at once.

const (
	// diskWorkers is how many disks the node prepares at once.
	diskWorkers = 2
)

// A preparation that failed for a reason that may pass (see prepareFailsForGood) is tried again
// after a back-off doubling from prepareRetryMin up to prepareRetryMax; tests shorten them.
var (
	prepareRetryMin = 5 * time.Second
	prepareRetryMax = 5 * time.Minute
)

func newPrepareQueue() workqueue.TypedRateLimitingInterface[string] {
	return workqueue.NewTypedRateLimitingQueue(workqueue.NewTypedItemExponentialFailureRateLimiter[string](prepareRetryMin, prepareRetryMax))
}

// preparationChanged says whether an update of a disk may change what its preparation does: a
// new object, spec or placement, a deletion, an upload that completed, a phase set by someone
// else. The status this node writes while preparing (progress, a retrying condition) is not:
// queueing the disk then would retry a failed preparation at once, past the back-off.
func preparationChanged(old, cur *apps.VMDisk) bool {
	uploaded := func(d *apps.VMDisk) bool { return meta.IsStatusConditionTrue(d.Status.Conditions, "Uploaded") }
	return old.UID != cur.UID || old.Generation != cur.Generation || old.Status.Node != cur.Status.Node ||
		(old.DeletionTimestamp == nil) != (cur.DeletionTimestamp == nil) || uploaded(old) != uploaded(cur) ||
		(old.Status.Phase != cur.Status.Phase && cur.Status.Phase != apps.DiskImporting)
}

type diskQueue struct {
	a     *Agent
	inf   cache.SharedIndexInformer
	queue workqueue.TypedRateLimitingInterface[string]

	mu sync.Mutex
	// active cancels the preparation running for a disk, by namespace/name.
	active map[string]preparation
}

type preparation struct {
	uid    types.UID
	cancel context.CancelFunc
}

// runDiskQueue watches the disks placed on this node and prepares them until ctx ends. It
// returns once every preparation has ended: a cancelled preparation removes what it made (a
// half-filled image under its temporary name) before the agent may exit. Drivers never put a
// half-made disk under its final name, so what a killed agent leaves is never taken for a
// finished disk; the drivers' sweeps remove it later.
func (a *Agent) runDiskQueue(ctx context.Context) {
	q := &diskQueue{a: a, active: map[string]preparation{},
		inf:   client.NewInformer(a.c.Apps, "vmdisks", &apps.VMDisk{}, "status.node="+a.opts.Node, 0),
		queue: newPrepareQueue()}
	enqueue := func(obj interface{}) {
		if key, err := cache.MetaNamespaceKeyFunc(obj); err == nil {
			q.queue.Add(key)
		}
	}
	q.inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: enqueue,
		UpdateFunc: func(old, o interface{}) {
			prev, cur := old.(*apps.VMDisk), o.(*apps.VMDisk)
			if prev.UID != cur.UID {
				q.cancel(prev.Namespace+"/"+prev.Name, prev.UID, "the disk was deleted and created again")
			}
			if preparationChanged(prev, cur) {
				enqueue(o)
			}
		},
		// Gone from the watch: deleted, or no longer placed on this node.
		DeleteFunc: func(obj interface{}) {
			key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj)
			if err != nil {
				return
			}
			var uid types.UID
			if d, ok := obj.(*apps.VMDisk); ok {
				uid = d.UID
			}
			q.cancel(key, uid, "the disk was deleted or moved to another node")
		},
	})
	go q.inf.Run(ctx.Done())
	go func() { <-ctx.Done(); q.queue.ShutDown() }()
	if !cache.WaitForCacheSync(ctx.Done(), q.inf.HasSynced) {
		return
	}
	a.removeLeftoverKeys()
	var workers sync.WaitGroup
	for range diskWorkers {
		workers.Go(func() { q.work(ctx) })
	}
	workers.Wait()
}

// prepareKeysDir holds, per disk being prepared, the tenant key qemu-img reads.
func (a *Agent) prepareKeysDir() string { return filepath.Join(a.opts.DataDir, "prepare") }

// removeLeftoverKeys removes the tenant keys a previous run of the agent left when it ended in
// the middle of a preparation (a crash, a reboot): a key does not stay on disk, even when its
// disk is deleted before the agent is back. Called before any preparation starts.
func (a *Agent) removeLeftoverKeys() {
	if err := os.RemoveAll(a.prepareKeysDir()); err != nil {
		slog.Warn("remove the disk keys a previous run left", "dir", a.prepareKeysDir(), "err", err)
	}
}

func (q *diskQueue) work(ctx context.Context) {
	for {
		key, quit := q.queue.Get()
		if quit {
			return
		}
		if err := q.prepare(ctx, key); err != nil {
			slog.Warn("prepare disk; will retry", "disk", key, "err", err, "retries", q.queue.NumRequeues(key))
			q.queue.AddRateLimited(key)
		} else {
			q.queue.Forget(key)
		}
		q.queue.Done(key)
	}
}

// cancel stops the preparation of a disk that is gone (uid empty: whatever runs under key).
func (q *diskQueue) cancel(key string, uid types.UID, why string) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if p, ok := q.active[key]; ok && (uid == "" || p.uid == uid) {
		slog.Info("cancelling disk preparation", "disk", key, "reason", why)
		p.cancel()
		delete(q.active, key)
	}
}

// needsPreparing says whether a disk placed on this node still has to be prepared here.
func (q *diskQueue) needsPreparing(d *apps.VMDisk) bool { return needsPreparing(d, q.a.opts.Node) }

// needsPreparing says whether a disk placed on node still has to be prepared there.
func needsPreparing(d *apps.VMDisk, node string) bool {
	if d.DeletionTimestamp != nil || d.Status.Node != node || d.Status.Phase == apps.DiskReady || d.Status.Phase == apps.DiskFailed {
		return false
	}
	return d.Spec.Source.Upload == nil || meta.IsStatusConditionTrue(d.Status.Conditions, "Uploaded")
}

// prepare imports, copies or creates one disk with the tenant's key fetched for the disk itself.
func (q *diskQueue) prepare(parent context.Context, key string) error {
	obj, exists, err := q.inf.GetStore().GetByKey(key)
	if err != nil || !exists {
		return err
	}
	d := obj.(*apps.VMDisk)
	if !q.needsPreparing(d) {
		return nil
	}
	ctx, cancel := context.WithCancel(parent)
	defer cancel()
	q.mu.Lock()
	q.active[key] = preparation{uid: d.UID, cancel: cancel}
	q.mu.Unlock()
	defer func() {
		q.mu.Lock()
		if p, ok := q.active[key]; ok && p.uid == d.UID {
			delete(q.active, key)
		}
		q.mu.Unlock()
	}()

	dir := filepath.Join(q.a.prepareKeysDir(), string(d.UID))
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("key directory of disk %s: %w", key, err)
	}
	defer os.RemoveAll(dir) // the key does not stay on disk
	k, err := q.a.writeVMDiskKey(ctx, d, dir)
	if err != nil {
		return err
	}
	start := time.Now()
	if err := q.a.prepareDisk(ctx, d.Namespace, d.Name, k); err != nil {
		if ctx.Err() != nil {
			slog.Info("disk preparation cancelled", "disk", key, "err", err)
			return nil // deleted, moved or the agent stops; a restarted agent resumes it
		}
		if errors.Is(err, errPreparedFailed) {
			slog.Warn("disk preparation failed for good", "disk", key, "err", err)
			return nil
		}
		return err // retried after the back-off
	}
	slog.Info("disk prepared", "disk", key, "class", d.Spec.StorageClass, "took", time.Since(start).Round(time.Millisecond))
	return nil
}

// writeVMDiskKey fetches the tenant's disk key for a disk placed on this node (the server hands
// it to no other node) and writes it into dir for qemu-img.
func (a *Agent) writeVMDiskKey(ctx context.Context, d *apps.VMDisk, dir string) (storage.Key, error) {
	k := &kumo.TenantKey{}
	if err := a.c.Apps.Get().Namespace(d.Namespace).Resource("vmdisks").Name(d.Name).SubResource("diskkey").Do(ctx).Into(k); err != nil {
		return storage.Key{}, fmt.Errorf("disk key of tenant %s for disk %s: %w", kumo.TenantOfNamespace(d.Namespace), d.Name, err)
	}
	path := filepath.Join(dir, "disk.key")
	if err := os.WriteFile(path, []byte(k.Key), 0o600); err != nil {
		return storage.Key{}, fmt.Errorf("write the disk key of disk %s/%s: %w", d.Namespace, d.Name, err)
	}
	return storage.Key{File: path}, nil
}
