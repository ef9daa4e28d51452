package scheduler

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/cache"

	apps "kumo.dev/kumo/pkg/apis/apps/v1alpha1"
	kumo "kumo.dev/kumo/pkg/apis/kumo/v1alpha1"
)

// Disks are placed as soon as they are created, so that their import runs before any VM needs
// them: the scheduler sets status.node to the node that prepares the disk (for a local disk, the
// node that holds it for good; its VMs then run there), and that node's agent prepares it on its
// own queue. A VM is bound only once all its disks are Ready.

const (
	// ConditionDiskScheduled on a VMDisk says whether a node was chosen to prepare it.
	ConditionDiskScheduled = "Scheduled"
	// conditionUploaded on an upload disk says its content was received (set by the API server).
	conditionUploaded = "Uploaded"
)

// diskNeedsNode says whether a disk waits to be placed.
func diskNeedsNode(d *apps.VMDisk) bool {
	return d.DeletionTimestamp == nil && d.Status.Node == "" && d.Status.Phase != apps.DiskReady && d.Status.Phase != apps.DiskFailed
}

func (ctl *Controller) requeuePendingDisks() {
	for _, obj := range ctl.inf.Disks.GetStore().List() {
		if d := obj.(*apps.VMDisk); diskNeedsNode(d) {
			if key, err := cache.MetaNamespaceKeyFunc(d); err == nil {
				ctl.diskQueue.Add(key)
			}
		}
	}
}

// runDisks places disks until the queue shuts down.
func (ctl *Controller) runDisks(ctx context.Context) {
	for {
		key, quit := ctl.diskQueue.Get()
		if quit {
			return
		}
		if err := ctl.placeDisk(ctx, key); err != nil {
			slog.Warn("place disk", "disk", key, "err", err)
			ctl.diskQueue.AddRateLimited(key)
		} else {
			ctl.diskQueue.Forget(key)
		}
		ctl.diskQueue.Done(key)
	}
}

// placeDisk chooses the node that prepares one disk. Its status write carries the resourceVersion
// the decision was made on, so a decision made twice on a stale cache conflicts instead of moving
// the disk.
func (ctl *Controller) placeDisk(ctx context.Context, key string) error {
	obj, exists, err := ctl.inf.Disks.GetStore().GetByKey(key)
	if err != nil || !exists {
		return err
	}
	d := obj.(*apps.VMDisk)
	if !diskNeedsNode(d) {
		return nil
	}
	req, err := ctl.diskRequest(d)
	if err == nil {
		var n Node
		if n, err = PlaceDisk(req, ctl.nodes()); err == nil {
			return ctl.bindDisk(ctx, d, n)
		}
	}
	if u, ok := err.(*Unschedulable); ok {
		ctl.diskQueue.AddAfter(key, retryUnschedulable)
		return ctl.markDiskUnschedulable(ctx, d, u)
	}
	return err
}

// diskRequest says what the node preparing a disk needs: its storage class, the golden image it
// starts from, the node of the local disk it is copied from. An upload disk waits for its upload
// and a copy for its source to be ready.
func (ctl *Controller) diskRequest(d *apps.VMDisk) (Request, error) {
	req := Request{StorageClasses: []string{string(d.Spec.StorageClass)}}
	switch src := d.Spec.Source; {
	case src.Upload != nil:
		if !meta.IsStatusConditionTrue(d.Status.Conditions, conditionUploaded) {
			return Request{}, &Unschedulable{Reason: ReasonWaitingForUpload,
				Message: fmt.Sprintf("waits for its upload (kumo upload vmdisk %s --file FILE)", d.Name)}
		}
	case src.Image != nil:
		if !ctl.imageExists(src.Image.Name) {
			return Request{}, &Unschedulable{Reason: ReasonImageNotFound, Message: fmt.Sprintf(
				"golden image %s does not exist (kumo image list shows the images; an admin adds one with kumo image import)", src.Image.Name)}
		}
		req.Images = []string{src.Image.Name}
	case src.Disk != nil:
		obj, ok, _ := ctl.inf.Disks.GetStore().GetByKey(d.Namespace + "/" + src.Disk.Name)
		if !ok {
			return Request{}, &Unschedulable{Message: fmt.Sprintf("source disk %s does not exist", src.Disk.Name)}
		}
		s := obj.(*apps.VMDisk)
		switch {
		case s.Status.Phase == apps.DiskFailed:
			return Request{}, &Unschedulable{Message: fmt.Sprintf("source disk %s failed: %s", s.Name, diskFailure(s))}
		case s.Status.Phase != apps.DiskReady:
			return Request{}, &Unschedulable{Reason: ReasonWaitingForSource, Message: fmt.Sprintf("waits for its source disk %s (%s)", s.Name, diskState(s))}
		}
		if s.Spec.StorageClass != d.Spec.StorageClass {
			req.StorageClasses = append(req.StorageClasses, string(s.Spec.StorageClass))
		}
		if s.Spec.StorageClass == apps.StorageLocal {
			req.Node = s.Status.Node // its data is on that node only
			// qemu-img does not read an image a running QEMU writes (its write lock): the copy
			// would fail for good. It waits until no VM runs on the source.
			if vm := ctl.boundUser(s); vm != "" {
				return Request{}, &Unschedulable{Reason: ReasonWaitingForSource,
					Message: fmt.Sprintf("waits for VM %s to stop: it runs on the source disk %s, and a local disk is copied while no VM writes it", vm, s.Name)}
			}
		}
	}
	if d.Spec.StorageClass == apps.StorageLocal {
		req.LocalBytes = localBytes(d)
	}
	if d.Spec.StorageClass == apps.StorageLocal && req.Node == "" {
		// A VM runs on the node of its local disks: a disk of a VM whose other local disks are
		// placed already goes to their node, or the VM could never run.
		req.Node, req.NodeBy = ctl.siblingsNode(d)
	}
	return req, nil
}

// imageExists says whether a golden image of that name is registered (a GoldenImage) or present
// on a node (files in an agent's --images-dir count too). Without an image informer it assumes so.
func (ctl *Controller) imageExists(name string) bool {
	if ctl.inf.Images == nil {
		return true
	}
	if _, ok, _ := ctl.inf.Images.GetStore().GetByKey(name); ok {
		return true
	}
	for _, obj := range ctl.inf.Nodes.GetStore().List() {
		if slices.Contains(obj.(*kumo.Node).Status.Images, name) {
			return true
		}
	}
	return false
}

// siblingsNode is the node holding (or chosen for) the other local disks of the VMs that name
// local disk d, and which disk that is; "" when there is none or they are on several nodes.
func (ctl *Controller) siblingsNode(d *apps.VMDisk) (node, by string) {
	ctl.mu.Lock()
	assumed := map[string]string{}
	for k, n := range ctl.assumedDisks {
		assumed[k] = n
	}
	ctl.mu.Unlock()
	vms, _ := ctl.inf.VMs.GetIndexer().ByIndex(cache.NamespaceIndex, d.Namespace)
	for _, obj := range vms {
		vm := obj.(*apps.VMInstance)
		if !namesDisk(vm, d.Name) {
			continue
		}
		for _, ref := range vm.Spec.Disks {
			key := d.Namespace + "/" + ref.Name
			obj, ok, _ := ctl.inf.Disks.GetStore().GetByKey(key)
			if ref.Name == d.Name || !ok {
				continue
			}
			other := obj.(*apps.VMDisk)
			n := other.Status.Node
			if n == "" {
				n = assumed[key]
			}
			if other.Spec.StorageClass != apps.StorageLocal || other.Status.Phase == apps.DiskFailed || n == "" {
				continue
			}
			if node != "" && node != n {
				return "", "" // the VM cannot run anyway; its scheduling says why
			}
			node, by = n, fmt.Sprintf("disk %s of VM %s", other.Name, vm.Name)
		}
	}
	return node, by
}

// boundUser names a VM bound to a node (or just bound by this scheduler) that has disk d, or "".
func (ctl *Controller) boundUser(d *apps.VMDisk) string {
	ctl.mu.Lock()
	assumed := map[string]bool{}
	for k := range ctl.assumed {
		assumed[k] = true
	}
	ctl.mu.Unlock()
	vms, _ := ctl.inf.VMs.GetIndexer().ByIndex(cache.NamespaceIndex, d.Namespace)
	for _, obj := range vms {
		vm := obj.(*apps.VMInstance)
		if (vm.Status.Node != "" || assumed[vm.Namespace+"/"+vm.Name]) && namesDisk(vm, d.Name) {
			return vm.Name
		}
	}
	return ""
}

func namesDisk(vm *apps.VMInstance, disk string) bool {
	for _, ref := range vm.Spec.Disks {
		if ref.Name == disk {
			return true
		}
	}
	return false
}

func (ctl *Controller) bindDisk(ctx context.Context, d *apps.VMDisk, n Node) error {
	d = d.DeepCopy()
	d.Status.Node = n.Name
	msg := fmt.Sprintf("prepared by node %s in datacenter %s", n.Name, n.Datacenter)
	if d.Spec.StorageClass == apps.StorageLocal {
		msg = fmt.Sprintf("held by node %s in datacenter %s (its VMs run there)", n.Name, n.Datacenter)
	}
	meta.SetStatusCondition(&d.Status.Conditions, metav1.Condition{Type: ConditionDiskScheduled, Status: metav1.ConditionTrue, Reason: "Placed", Message: msg, ObservedGeneration: d.Generation})
	err := ctl.c.Apps.Put().Namespace(d.Namespace).Resource("vmdisks").Name(d.Name).SubResource("status").Body(d).Do(ctx).Error()
	if apierrors.IsConflict(err) || apierrors.IsNotFound(err) {
		return nil // a newer version is on its way through the watch and will be queued
	}
	if err != nil {
		return fmt.Errorf("place disk %s/%s on node %s: %w", d.Namespace, d.Name, n.Name, err)
	}
	ctl.mu.Lock()
	ctl.assumedDisks[d.Namespace+"/"+d.Name] = n.Name
	ctl.mu.Unlock()
	ctl.recorder.Event(d, corev1.EventTypeNormal, "Scheduled", "Disk "+msg)
	slog.Info("disk placed", "disk", d.Namespace+"/"+d.Name, "class", d.Spec.StorageClass, "node", n.Name)
	return nil
}

func (ctl *Controller) markDiskUnschedulable(ctx context.Context, d *apps.VMDisk, u *Unschedulable) error {
	reason := u.reason()
	prev := meta.FindStatusCondition(d.Status.Conditions, ConditionDiskScheduled)
	if prev != nil && prev.Status == metav1.ConditionFalse && prev.Message == u.Message && prev.Reason == reason {
		return nil
	}
	d = d.DeepCopy()
	meta.SetStatusCondition(&d.Status.Conditions, metav1.Condition{Type: ConditionDiskScheduled, Status: metav1.ConditionFalse, Reason: reason, Message: u.Message, ObservedGeneration: d.Generation})
	err := ctl.c.Apps.Put().Namespace(d.Namespace).Resource("vmdisks").Name(d.Name).SubResource("status").Body(d).Do(ctx).Error()
	if apierrors.IsConflict(err) || apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("mark disk %s/%s unschedulable: %w", d.Namespace, d.Name, err)
	}
	if reason == ReasonUnschedulable || reason == ReasonImageNotFound {
		ctl.recorder.Event(d, corev1.EventTypeWarning, "FailedScheduling", u.Message)
	}
	return nil
}

// reasonPrepareRetrying is the reason of a disk's Ready condition the agent sets while a
// preparation that failed for a passing reason waits to be tried again (agent.ReasonPrepareRetrying).
const reasonPrepareRetrying = "PrepareRetrying"

// diskState says what a disk that is not ready is doing, for the message of a VM waiting for it.
func diskState(d *apps.VMDisk) string {
	c := meta.FindStatusCondition(d.Status.Conditions, ConditionDiskScheduled)
	ready := meta.FindStatusCondition(d.Status.Conditions, "Ready")
	switch {
	case d.Status.Node != "" && ready != nil && ready.Status == metav1.ConditionFalse && ready.Reason == reasonPrepareRetrying:
		return fmt.Sprintf("preparing on node %s failed, retrying: %s", d.Status.Node, ready.Message)
	case d.Status.Phase == apps.DiskImporting && d.Status.Progress != "":
		return "importing " + d.Status.Progress
	case d.Status.Phase == apps.DiskImporting:
		return "importing"
	case d.Status.Node != "":
		return "pending on node " + d.Status.Node
	case d.Spec.Source.Upload != nil && !meta.IsStatusConditionTrue(d.Status.Conditions, conditionUploaded):
		return fmt.Sprintf("waits for its upload: kumo upload vmdisk %s --file FILE", d.Name)
	case c != nil && c.Status == metav1.ConditionFalse:
		return "not placed: " + c.Message
	}
	return "pending"
}

// disksFree refuses a VM whose non-optical disk another bound VM (or one this scheduler just
// bound) uses: two VMs never write one disk. Admission refuses the second VM already; this
// re-check closes the window between two admissions and covers objects stored before it.
func (ctl *Controller) disksFree(key string, vm *apps.VMInstance) error {
	mine := map[string]bool{}
	for _, ref := range vm.Spec.Disks {
		if obj, ok, _ := ctl.inf.Disks.GetStore().GetByKey(vm.Namespace + "/" + ref.Name); ok && !obj.(*apps.VMDisk).Spec.Optical {
			mine[ref.Name] = true
		}
	}
	if len(mine) == 0 {
		return nil
	}
	ctl.mu.Lock()
	assumed := map[string]string{}
	for k, a := range ctl.assumed {
		assumed[k] = a.node
	}
	ctl.mu.Unlock()
	var holders []string
	for _, obj := range ctl.inf.VMs.GetStore().List() {
		other := obj.(*apps.VMInstance)
		otherKey, _ := cache.MetaNamespaceKeyFunc(other)
		if other.Namespace != vm.Namespace || otherKey == key {
			continue
		}
		node := other.Status.Node
		if node == "" {
			node = assumed[otherKey]
		}
		if node == "" {
			continue
		}
		for _, ref := range other.Spec.Disks {
			if mine[ref.Name] {
				holders = append(holders, fmt.Sprintf("disk %s is in use by VM %s (bound to node %s)", ref.Name, other.Name, node))
			}
		}
	}
	if len(holders) > 0 {
		return &Unschedulable{Message: strings.Join(holders, "; ")}
	}
	return nil
}

// followVM records on each replicated (non-optical) disk of a VM the node about to run it: the
// node that writes a disk is the one allowed to report its status (size after a resize).
func (ctl *Controller) followVM(ctx context.Context, vm *apps.VMInstance, node string) error {
	for _, ref := range vm.Spec.Disks {
		obj, ok, _ := ctl.inf.Disks.GetStore().GetByKey(vm.Namespace + "/" + ref.Name)
		if !ok {
			continue
		}
		d := obj.(*apps.VMDisk)
		if d.Spec.StorageClass == apps.StorageLocal || d.Spec.Optical || d.Status.Node == node {
			continue
		}
		d = d.DeepCopy()
		d.Status.Node = node
		meta.SetStatusCondition(&d.Status.Conditions, metav1.Condition{Type: ConditionDiskScheduled, Status: metav1.ConditionTrue, Reason: "FollowsVM",
			Message: fmt.Sprintf("written by VM %s on node %s", vm.Name, node), ObservedGeneration: d.Generation})
		if err := ctl.c.Apps.Put().Namespace(d.Namespace).Resource("vmdisks").Name(d.Name).SubResource("status").Body(d).Do(ctx).Error(); err != nil {
			return fmt.Errorf("move replicated disk %s/%s to node %s for VM %s: %w", d.Namespace, d.Name, node, vm.Name, err)
		}
	}
	return nil
}

// localBytes is what a local disk takes on its node: its declared size (qcow2 files are thin,
// but a guest may fill them, and the node must then hold every byte).
func localBytes(d *apps.VMDisk) int64 {
	if d.Spec.Storage == nil {
		return 0
	}
	return d.Spec.Storage.Value()
}
