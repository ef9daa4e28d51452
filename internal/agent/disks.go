package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"

	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"

	"kumo.dev/kumo/internal/storage"
	"kumo.dev/kumo/internal/storage/importer"
	apps "kumo.dev/kumo/pkg/apis/apps/v1alpha1"
	kumo "kumo.dev/kumo/pkg/apis/kumo/v1alpha1"
)

type preparedDisk struct {
	vol     storage.Volume
	optical bool
}

// prepareDisk makes a disk placed on this node ready through its storage class's driver and
// records the outcome in the disk's status (a local disk is bound to this node from then on).
// It looks at the disk as the API has it now, not as the queue's watch last showed it: a disk
// that is Ready (a VM may be using it), Failed, deleted or placed elsewhere is left alone.
func (a *Agent) prepareDisk(ctx context.Context, namespace, name string, key storage.Key) error {
	d := &apps.VMDisk{}
	if err := a.c.Apps.Get().Namespace(namespace).Resource("vmdisks").Name(name).Do(ctx).Into(d); err != nil {
		if apierrors.IsNotFound(err) {
			return fmt.Errorf("disk %s does not exist", name)
		}
		return fmt.Errorf("read disk %s: %w", name, err)
	}
	if !needsPreparing(d, a.opts.Node) {
		return nil
	}
	drv, err := a.drives.For(d)
	var vol storage.Volume
	if err == nil {
		a.event(d, corev1.EventTypeNormal, "Preparing", fmt.Sprintf("preparing the %s disk on node %s from %s", d.Spec.StorageClass, a.opts.Node, describeSource(d)))
		vol, err = storage.Ensure(ctx, drv, storage.Request{Disk: d, Key: key, Progress: a.importProgress(ctx, d),
			ResolveSource: func(ctx context.Context) (*apps.VMDisk, error) { return sourceDisk(ctx, a.getDisk, d) }})
	}
	if err != nil {
		if !prepareFailsForGood(err) {
			// An rbd timeout, an API error, a golden image not cached yet: the disk stays
			// Pending (or Importing) and the queue tries again after a back-off.
			a.event(d, corev1.EventTypeWarning, "PrepareRetrying", err.Error())
			a.reportDisk(ctx, d, func(cur *apps.VMDisk) {
				meta.SetStatusCondition(&cur.Status.Conditions, metav1.Condition{Type: "Ready", Status: metav1.ConditionFalse, Reason: ReasonPrepareRetrying,
					Message: err.Error(), ObservedGeneration: cur.Generation})
			})
			return fmt.Errorf("disk %s (will retry): %w", name, err)
		}
		reason := "PrepareFailed"
		if importer.IsRefused(err) {
			reason = "ImageRefused"
		}
		a.event(d, corev1.EventTypeWarning, reason, err.Error())
		if rerr := a.reportDisk(ctx, d, func(cur *apps.VMDisk) {
			cur.Status.Phase = apps.DiskFailed
			meta.SetStatusCondition(&cur.Status.Conditions, metav1.Condition{Type: "Ready", Status: metav1.ConditionFalse, Reason: reason, Message: err.Error(), ObservedGeneration: cur.Generation})
		}); rerr != nil {
			return fmt.Errorf("disk %s: %w (%v)", name, err, rerr) // not recorded: tried again
		}
		return fmt.Errorf("disk %s: %w: %w", name, errPreparedFailed, err)
	}
	a.event(d, corev1.EventTypeNormal, "Ready", fmt.Sprintf("disk ready on node %s: %s", a.opts.Node, resource.NewQuantity(vol.SizeBytes, resource.BinarySI)))
	// Unless the API has it Ready, no VM is ever bound to the disk: a failed report is an error
	// of the preparation, which the queue retries (the disk is then found made and opened).
	return a.reportDisk(ctx, d, func(cur *apps.VMDisk) {
		cur.Status.Phase, cur.Status.Progress = apps.DiskReady, "100%"
		cur.Status.Size = resource.NewQuantity(vol.SizeBytes, resource.BinarySI)
		if cur.Spec.StorageClass == apps.StorageLocal {
			cur.Status.Node = a.opts.Node
		}
		meta.SetStatusCondition(&cur.Status.Conditions, metav1.Condition{Type: "Ready", Status: metav1.ConditionTrue, Reason: "Prepared",
			Message: fmt.Sprintf("prepared on node %s", a.opts.Node), ObservedGeneration: cur.Generation})
	})
}

// ReasonPrepareRetrying is the reason of a disk's Ready condition while its preparation failed
// for a reason that may pass and is tried again.
const ReasonPrepareRetrying = "PrepareRetrying"

// errPreparedFailed is wrapped by prepareDisk once it recorded the disk Failed: trying again is
// useless until the disk's spec changes.
var errPreparedFailed = errors.New("the disk is Failed")

// prepareFailsForGood says whether a preparation error is final: the image was refused, or the
// disk's source is known not to exist. Any other error (a timeout, an API or Ceph error, an
// image not cached on the node yet) may pass.
func prepareFailsForGood(err error) bool {
	return importer.IsRefused(err) || errors.Is(err, storage.ErrNoSource)
}

// openDisk opens a Ready disk for a VM start. It never creates anything: a Ready disk whose data
// this node does not find is an error (a new blank or freshly imported disk in its place would
// hide the loss), and a failure to open it (a transient Ceph or qemu-img error) fails this start
// only: the disk stays Ready, its data untouched. It grows the disk to spec.storage (Open does)
// and reports a changed size.
func (a *Agent) openDisk(ctx context.Context, namespace, name string, key storage.Key) (preparedDisk, error) {
	d, err := a.getDisk(ctx, namespace, name)
	if apierrors.IsNotFound(err) {
		return preparedDisk{}, fmt.Errorf("disk %s does not exist", name)
	}
	if err != nil {
		return preparedDisk{}, fmt.Errorf("read disk %s: %w", name, err)
	}
	if d.Status.Phase != apps.DiskReady {
		return preparedDisk{}, fmt.Errorf("disk %s is not ready (phase %s): a VM starts only from prepared disks", name, d.Status.Phase)
	}
	if d.Spec.StorageClass == apps.StorageLocal && d.Status.Node != a.opts.Node {
		return preparedDisk{}, fmt.Errorf("local disk %s lives on node %q, not %s", name, d.Status.Node, a.opts.Node)
	}
	drv, err := a.drives.For(d)
	if err != nil {
		return preparedDisk{}, fmt.Errorf("disk %s: %w", name, err)
	}
	vol, err := drv.Open(ctx, d, key)
	if errors.Is(err, storage.ErrNotFound) {
		a.event(d, corev1.EventTypeWarning, "DataMissing", fmt.Sprintf("the disk is Ready but node %s does not find its data: %v", a.opts.Node, err))
		return preparedDisk{}, fmt.Errorf("disk %s is Ready but node %s does not find its data (not created again): %w", name, a.opts.Node, err)
	}
	if err != nil {
		return preparedDisk{}, fmt.Errorf("open disk %s: %w", name, err)
	}
	if d.Status.Size == nil || d.Status.Size.Value() != vol.SizeBytes {
		a.reportDisk(ctx, d, func(cur *apps.VMDisk) {
			cur.Status.Size = resource.NewQuantity(vol.SizeBytes, resource.BinarySI)
		})
	}
	return preparedDisk{vol: vol, optical: d.Spec.Optical}, nil
}

// sourceDisk resolves the VMDisk a disk is cloned from (spec.source.disk, same namespace): it
// must be Ready, so that the clone copies data that is complete and still belongs to a disk.
// Drivers then find its data by its UID. nil when the disk is not a clone.
func sourceDisk(ctx context.Context, get func(ctx context.Context, namespace, name string) (*apps.VMDisk, error), d *apps.VMDisk) (*apps.VMDisk, error) {
	if d.Spec.Source.Disk == nil {
		return nil, nil
	}
	name := d.Spec.Source.Disk.Name
	src, err := get(ctx, d.Namespace, name)
	if apierrors.IsNotFound(err) {
		return nil, fmt.Errorf("source disk %s: %w", name, storage.ErrNoSource)
	}
	if err != nil {
		return nil, fmt.Errorf("read source disk %s: %w", name, err)
	}
	if src.Status.Phase == apps.DiskFailed {
		return nil, fmt.Errorf("source disk %s failed to be prepared: %w", name, storage.ErrNoSource)
	}
	if src.Status.Phase != apps.DiskReady || src.DeletionTimestamp != nil {
		return nil, fmt.Errorf("source disk %s is not ready", name)
	}
	return src, nil
}

func (a *Agent) getDisk(ctx context.Context, namespace, name string) (*apps.VMDisk, error) {
	d := &apps.VMDisk{}
	return d, a.c.Apps.Get().Namespace(namespace).Resource("vmdisks").Name(name).Do(ctx).Into(d)
}

// reportDisk changes a disk's status, retrying on conflicts; a failure is logged and returned.
func (a *Agent) reportDisk(ctx context.Context, d *apps.VMDisk, mutate func(*apps.VMDisk)) error {
	err := retry.RetryOnConflict(retry.DefaultBackoff, func() error {
		cur := &apps.VMDisk{}
		if err := a.c.Apps.Get().Namespace(d.Namespace).Resource("vmdisks").Name(d.Name).Do(ctx).Into(cur); err != nil {
			return err
		}
		mutate(cur)
		return a.c.Apps.Put().Namespace(cur.Namespace).Resource("vmdisks").Name(cur.Name).SubResource("status").Body(cur).Do(ctx).Error()
	})
	if err != nil {
		slog.Warn("report disk status", "disk", d.Namespace+"/"+d.Name, "err", err)
		return fmt.Errorf("report the status of disk %s: %w", d.Name, err)
	}
	return nil
}

// importProgress reports an import's progress on the disk (phase Importing), every 5%.
func (a *Agent) importProgress(ctx context.Context, d *apps.VMDisk) storage.Progress {
	last := -5
	return func(p int) {
		if p < last+5 && p != 100 {
			return
		}
		last = p
		a.reportDisk(ctx, d, func(cur *apps.VMDisk) {
			cur.Status.Phase, cur.Status.Progress = apps.DiskImporting, fmt.Sprintf("%d%%", p)
			if cur.Spec.StorageClass == apps.StorageLocal {
				cur.Status.Node = a.opts.Node
			}
		})
	}
}

// writeDiskKey fetches the tenant's disk key for a VM bound to this node (the server hands it
// to no one else) and writes it into the VM's run directory for QEMU and qemu-img.
func (a *Agent) writeDiskKey(ctx context.Context, vm *apps.VMInstance, runDir string) (storage.Key, error) {
	k := &kumo.TenantKey{}
	if err := a.c.Apps.Get().Namespace(vm.Namespace).Resource("vminstances").Name(vm.Name).SubResource("diskkey").Do(ctx).Into(k); err != nil {
		return storage.Key{}, fmt.Errorf("disk key of tenant %s: %w", kumo.TenantOfNamespace(vm.Namespace), err)
	}
	path := filepath.Join(runDir, "disk.key")
	if err := os.WriteFile(path, []byte(k.Key), 0o600); err != nil {
		return storage.Key{}, err
	}
	return storage.Key{File: path}, nil
}

// event records an event on a disk (when the agent runs; tests may drive it without).
func (a *Agent) event(d *apps.VMDisk, kind, reason, msg string) {
	if a.recorder != nil {
		a.recorder.Event(d, kind, reason, msg)
	}
}

// describeSource names a disk's source for events.
func describeSource(d *apps.VMDisk) string {
	switch src := d.Spec.Source; {
	case src.HTTP != nil:
		// Never a password an object stored before such URLs were refused may hold.
		if u, err := url.Parse(src.HTTP.URL); err == nil {
			return u.Redacted()
		}
		return "an unparsable URL"
	case src.Image != nil:
		return "golden image " + src.Image.Name
	case src.Upload != nil:
		return "an upload"
	case src.Disk != nil:
		return "disk " + src.Disk.Name
	}
	return "nothing (blank)"
}

// gcPeriod is how often the agent looks for disk data whose VMDisk is gone.
const gcPeriod = 30 * time.Second

// collectGarbage deletes the stored data of disks that no longer exist (deleted, or deleted and
// created again under the same name: a new UID). It deletes only on the API's explicit answer.
func (a *Agent) collectGarbage(ctx context.Context) {
	for class, drv := range a.drives {
		objects, err := drv.List(ctx)
		if err != nil {
			slog.Warn("list disks for garbage collection", "class", class, "err", err)
			continue
		}
		for ns, objs := range objects {
			for _, obj := range objs {
				name, uidPrefix, ok := storage.ParseObjectName(obj)
				if !ok {
					continue
				}
				d := &apps.VMDisk{}
				err := a.c.Apps.Get().Namespace(ns).Resource("vmdisks").Name(name).Do(ctx).Into(d)
				gone := apierrors.IsNotFound(err) || (err == nil && !strings.HasPrefix(string(d.UID), uidPrefix))
				if !gone {
					continue
				}
				if err := drv.Delete(ctx, ns, obj); err != nil {
					slog.Warn("delete the data of a deleted disk", "class", class, "disk", ns+"/"+obj, "err", err)
					continue
				}
				slog.Info("deleted the data of a deleted disk", "class", class, "disk", ns+"/"+obj)
			}
		}
		if p, ok := drv.(interface{ PruneBases(context.Context) error }); ok {
			if err := p.PruneBases(ctx); err != nil {
				slog.Warn("prune tenant copies of golden images", "class", class, "err", err)
			}
		}
	}
}
