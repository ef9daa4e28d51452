package scheduler

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/workqueue"

	"kumo.dev/kumo/internal/controller/events"
	"kumo.dev/kumo/internal/metrics"
	apps "kumo.dev/kumo/pkg/apis/apps/v1alpha1"
	kumo "kumo.dev/kumo/pkg/apis/kumo/v1alpha1"
	"kumo.dev/kumo/pkg/client"
)

const (
	// resync re-examines pending VMs now and then (a node's heartbeat may have gone stale).
	resync = 30 * time.Second
	// HeartbeatGrace is how old a node's heartbeat may be for the node to take new VMs.
	HeartbeatGrace = 15 * time.Second
	// retryUnschedulable re-tries a VM no node could take.
	retryUnschedulable = 10 * time.Second
)

// Informers are the watches the scheduler reads.
type Informers struct {
	VMs, Nodes, Types, Disks cache.SharedIndexInformer
	// Images are the GoldenImages; optional (nil: a disk from an unknown image waits for a node
	// that has it, without saying the image does not exist).
	Images cache.SharedIndexInformer
}

// Controller binds pending VMs to nodes, one at a time so that its own bindings never overcommit
// a node: bindings not yet visible in the watch are remembered as assumed.
type Controller struct {
	c     *client.Client
	inf   Informers
	queue workqueue.TypedRateLimitingInterface[string]
	// diskQueue holds VMDisks to place (see disks.go).
	diskQueue workqueue.TypedRateLimitingInterface[string]
	recorder  record.EventRecorder

	mu      sync.Mutex
	assumed map[string]assumption
	// cachesSynced says whether the informers are filled (metrics are reported only then).
	cachesSynced func() bool
	// waiting is when the scheduler first saw each VM wait for a node (for the pending-time
	// histogram), by VM key.
	waiting map[string]waitingSince
	// assumedDisks are disk placements (disk key → node) not yet seen in the watch.
	assumedDisks map[string]string
}

type assumption struct {
	node        string
	incarnation int64
	res         Resources
}

// NewController builds the scheduler on shared informers.
func NewController(c *client.Client, inf Informers) *Controller {
	ctl := &Controller{c: c, inf: inf, assumed: map[string]assumption{}, assumedDisks: map[string]string{}, waiting: map[string]waitingSince{},
		queue:     workqueue.NewTypedRateLimitingQueue(workqueue.DefaultTypedControllerRateLimiter[string]()),
		diskQueue: workqueue.NewTypedRateLimitingQueue(workqueue.DefaultTypedControllerRateLimiter[string]())}
	ctl.cachesSynced = inf.synced
	enqueue := func(obj interface{}) {
		if key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj); err == nil {
			ctl.queue.Add(key)
		}
	}
	inf.VMs.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: enqueue,
		UpdateFunc: func(old, o interface{}) {
			enqueue(o)
			if old.(*apps.VMInstance).Status.Node != "" && o.(*apps.VMInstance).Status.Node == "" {
				ctl.requeuePending()      // a released VM may free a disk another VM waits for
				ctl.requeuePendingDisks() // or a local disk a copy waits to read
			}
		},
		DeleteFunc: func(o interface{}) { ctl.forget(o); ctl.requeuePending() },
	})
	requeue := func() { ctl.requeuePending(); ctl.requeuePendingDisks() }
	handlers := cache.ResourceEventHandlerFuncs{
		AddFunc: func(interface{}) { requeue() }, UpdateFunc: func(_, _ interface{}) { requeue() },
		DeleteFunc: func(interface{}) { requeue() },
	}
	inf.Nodes.AddEventHandler(handlers)
	inf.Disks.AddEventHandler(handlers)
	if inf.Images != nil {
		inf.Images.AddEventHandler(handlers)
	}
	return ctl
}

// Run schedules until ctx ends.
func (ctl *Controller) Run(ctx context.Context) {
	defer ctl.queue.ShutDown()
	defer ctl.diskQueue.ShutDown()
	ctl.recorder = events.NewRecorder(ctx, ctl.c, "kumo-scheduler")
	synced := []cache.InformerSynced{ctl.inf.VMs.HasSynced, ctl.inf.Nodes.HasSynced, ctl.inf.Types.HasSynced, ctl.inf.Disks.HasSynced}
	if ctl.inf.Images != nil {
		synced = append(synced, ctl.inf.Images.HasSynced)
	}
	if !cache.WaitForCacheSync(ctx.Done(), synced...) {
		return
	}
	go wait.Until(func() { ctl.requeuePending(); ctl.requeuePendingDisks() }, resync, ctx.Done())
	go ctl.runDisks(ctx)
	for {
		key, quit := ctl.queue.Get()
		if quit {
			return
		}
		began := time.Now()
		result, err := ctl.schedule(ctx, key)
		if result != "" {
			metrics.SchedulingAttempt.WithLabelValues(result).Observe(time.Since(began).Seconds())
		}
		if err != nil {
			slog.Warn("schedule VM", "vm", key, "err", err)
			ctl.queue.AddRateLimited(key)
		} else {
			ctl.queue.Forget(key)
		}
		ctl.queue.Done(key)
	}
}

func (ctl *Controller) requeuePending() {
	for _, obj := range ctl.inf.VMs.GetStore().List() {
		vm := obj.(*apps.VMInstance)
		if needsNode(vm) {
			if key, err := cache.MetaNamespaceKeyFunc(vm); err == nil {
				ctl.queue.Add(key)
			}
		}
	}
}

func (ctl *Controller) forget(obj interface{}) {
	if key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj); err == nil {
		ctl.mu.Lock()
		delete(ctl.assumed, key)
		delete(ctl.waiting, key)
		ctl.mu.Unlock()
	}
}

// needsNode says whether the VM waits for a binding.
func needsNode(vm *apps.VMInstance) bool {
	return vm.DeletionTimestamp == nil && vm.Status.Node == "" && vm.Status.Phase == apps.VMPending && vm.WantsRunning()
}

// schedule makes one attempt to place the VM; the result ("" when there was nothing to place)
// labels the attempt's duration.
func (ctl *Controller) schedule(ctx context.Context, key string) (string, error) {
	obj, exists, err := ctl.inf.VMs.GetStore().GetByKey(key)
	if err != nil || !exists {
		return "", err
	}
	vm := obj.(*apps.VMInstance)
	if !needsNode(vm) {
		return "", nil
	}
	ctl.mu.Lock()
	a, assumed := ctl.assumed[key]
	ctl.mu.Unlock()
	if assumed && a.incarnation > vm.Status.Incarnation {
		return "", nil // our binding is on its way through the watch
	}
	ctl.noteWaiting(key, vm)
	req, err := ctl.request(vm)
	if err == nil {
		err = ctl.disksFree(key, vm)
	}
	if err == nil {
		var n Node
		if n, err = Place(req, ctl.nodes()); err == nil {
			if err := ctl.bind(ctx, key, vm, n, req.Resources); err != nil {
				return metrics.ResultError, err
			}
			return metrics.ResultBound, nil
		}
	}
	if u, ok := err.(*Unschedulable); ok {
		ctl.queue.AddAfter(key, retryUnschedulable)
		return metrics.ResultUnschedulable, ctl.markUnschedulable(ctx, vm, u)
	}
	return metrics.ResultError, err
}

// vmSize is what a VM is guaranteed: spec.resources when it sizes the VM, else its instance type.
func (ctl *Controller) vmSize(vm *apps.VMInstance) (Resources, bool) {
	if size, ok := vm.Spec.ExplicitSize(); ok {
		return Resources{CPUs: size.CPUs, Memory: size.Memory}, true
	}
	obj, ok, _ := ctl.inf.Types.GetStore().GetByKey(vm.Spec.InstanceType)
	if !ok {
		return Resources{}, false
	}
	it := obj.(*kumo.InstanceType)
	return Resources{CPUs: int64(it.Spec.CPUs), Memory: it.Spec.Memory.Value()}, true
}

// request computes what a VM needs from its size and disks.
func (ctl *Controller) request(vm *apps.VMInstance) (Request, error) {
	size, ok := ctl.vmSize(vm)
	if !ok {
		return Request{}, &Unschedulable{Message: fmt.Sprintf("instance type %s does not exist", vm.Spec.InstanceType)}
	}
	req := Request{Resources: size}
	// Every disk must exist and none may have failed; then every disk must be ready (disks are
	// placed and prepared on their own, see disks.go).
	var disks []*apps.VMDisk
	for _, ref := range vm.Spec.Disks {
		obj, ok, _ := ctl.inf.Disks.GetStore().GetByKey(vm.Namespace + "/" + ref.Name)
		if !ok {
			return Request{}, &Unschedulable{Message: fmt.Sprintf("disk %s does not exist", ref.Name)}
		}
		d := obj.(*apps.VMDisk)
		if d.Status.Phase == apps.DiskFailed {
			return Request{}, &Unschedulable{Message: fmt.Sprintf("disk %s failed: %s", d.Name, diskFailure(d))}
		}
		disks = append(disks, d)
	}
	for _, d := range disks {
		if d.Status.Phase != apps.DiskReady {
			return Request{}, &Unschedulable{Reason: ReasonWaitingForDisk, Message: fmt.Sprintf("waiting for disk %s (%s)", d.Name, diskState(d))}
		}
	}
	for _, d := range disks {
		req.StorageClasses = append(req.StorageClasses, string(d.Spec.StorageClass))
		if d.Spec.StorageClass != apps.StorageLocal {
			continue
		}
		switch {
		case d.Status.Node == "":
			return Request{}, &Unschedulable{Message: fmt.Sprintf("local disk %s is ready but names no node", d.Name)}
		case req.Node != "" && req.Node != d.Status.Node:
			return Request{}, &Unschedulable{Message: fmt.Sprintf("its local disks live on different nodes (%s on %s, another on %s)", d.Name, d.Status.Node, req.Node)}
		default:
			req.Node = d.Status.Node
		}
	}
	return req, nil
}

func diskFailure(d *apps.VMDisk) string {
	if c := meta.FindStatusCondition(d.Status.Conditions, "Ready"); c != nil && c.Status == metav1.ConditionFalse && c.Message != "" {
		return c.Message
	}
	for _, c := range d.Status.Conditions {
		if c.Status == metav1.ConditionFalse && c.Message != "" {
			return c.Message
		}
	}
	return "see kumo describe vmdisk " + d.Name
}

// nodes summarises every node with the resources its bound VMs (and our assumed bindings) use.
func (ctl *Controller) nodes() []Node {
	byName := map[string]*Node{}
	var out []Node
	for _, obj := range ctl.inf.Nodes.GetStore().List() {
		n := obj.(*kumo.Node)
		cpu, mem := n.Status.Allocatable["cpu"], n.Status.Allocatable["memory"]
		images, classes := map[string]bool{}, map[string]bool{}
		for _, img := range n.Status.Images {
			images[img] = true
		}
		for _, c := range n.Status.StorageClasses {
			classes[c] = true
		}
		local := int64(-1)
		if q, ok := n.Status.Allocatable[kumo.ResourceLocalStorage]; ok {
			local = q.Value()
		}
		out = append(out, Node{
			Name: n.Name, Datacenter: n.Spec.Datacenter, Ready: nodeReady(n, time.Now()), Schedulable: !n.Spec.Unschedulable,
			Allocatable: Resources{CPUs: cpu.Value(), Memory: mem.Value()}, Images: images, StorageClasses: classes,
			LocalStorage: local,
		})
	}
	for i := range out {
		byName[out[i].Name] = &out[i]
	}
	seen := map[string]bool{}
	for _, obj := range ctl.inf.VMs.GetStore().List() {
		vm := obj.(*apps.VMInstance)
		n := byName[vm.Status.Node]
		if n == nil {
			continue
		}
		key, _ := cache.MetaNamespaceKeyFunc(vm)
		seen[key] = true
		if size, ok := ctl.vmSize(vm); ok {
			n.Used.CPUs += size.CPUs
			n.Used.Memory += size.Memory
		}
		n.VMs++
	}
	ctl.mu.Lock()
	defer ctl.mu.Unlock()
	for _, obj := range ctl.inf.Disks.GetStore().List() {
		d := obj.(*apps.VMDisk)
		key, _ := cache.MetaNamespaceKeyFunc(d)
		node := d.Status.Node
		if node != "" || d.Status.Phase == apps.DiskReady || d.Status.Phase == apps.DiskFailed {
			delete(ctl.assumedDisks, key) // the watch caught up (or the disk moved on)
		} else {
			node = ctl.assumedDisks[key]
		}
		if n := byName[node]; n != nil && d.Spec.StorageClass == apps.StorageLocal {
			n.Disks++
			n.LocalUsed += localBytes(d)
		}
	}
	for key := range ctl.assumedDisks {
		if _, ok, _ := ctl.inf.Disks.GetStore().GetByKey(key); !ok {
			delete(ctl.assumedDisks, key)
		}
	}
	for key, a := range ctl.assumed {
		obj, ok, _ := ctl.inf.VMs.GetStore().GetByKey(key)
		if !ok || obj.(*apps.VMInstance).Status.Incarnation >= a.incarnation {
			delete(ctl.assumed, key) // the watch caught up (or the VM is gone)
			continue
		}
		if n := byName[a.node]; n != nil && !seen[key] {
			n.Used.CPUs += a.res.CPUs
			n.Used.Memory += a.res.Memory
			n.VMs++
		}
	}
	return out
}

// nodeReady: the agent says Ready and its heartbeat is fresh.
func nodeReady(n *kumo.Node, now time.Time) bool {
	c := meta.FindStatusCondition(n.Status.Conditions, kumo.NodeConditionReady)
	return c != nil && c.Status == metav1.ConditionTrue && now.Sub(n.Status.LastHeartbeatTime.Time) < HeartbeatGrace
}

func (ctl *Controller) bind(ctx context.Context, key string, vm *apps.VMInstance, n Node, res Resources) error {
	if err := ctl.followVM(ctx, vm, n.Name); err != nil {
		return err
	}
	vm = vm.DeepCopy()
	inc := vm.Status.Incarnation + 1
	if vm.Status.Incarnation > 0 {
		vm.Status.Restarts++
	}
	vm.Status.Node, vm.Status.Datacenter, vm.Status.Incarnation, vm.Status.Phase = n.Name, n.Datacenter, inc, apps.VMScheduled
	msg := fmt.Sprintf("incarnation %d bound to node %s in datacenter %s", inc, n.Name, n.Datacenter)
	meta.SetStatusCondition(&vm.Status.Conditions, metav1.Condition{Type: apps.ConditionScheduled, Status: metav1.ConditionTrue, Reason: "Bound", Message: msg, ObservedGeneration: vm.Generation})
	err := ctl.c.Apps.Put().Namespace(vm.Namespace).Resource("vminstances").Name(vm.Name).SubResource("status").Body(vm).Do(ctx).Error()
	if apierrors.IsConflict(err) || apierrors.IsNotFound(err) {
		return nil // a newer version is on its way through the watch and will be queued
	}
	if err != nil {
		return fmt.Errorf("bind VM %s to node %s: %w", key, n.Name, err)
	}
	ctl.mu.Lock()
	ctl.assumed[key] = assumption{node: n.Name, incarnation: inc, res: res}
	ctl.mu.Unlock()
	ctl.noteBound(key, vm.Status.Incarnation-1)
	ctl.recorder.Event(vm, corev1.EventTypeNormal, "Scheduled", "Scheduled "+msg)
	slog.Info("VM scheduled", "vm", key, "node", n.Name, "datacenter", n.Datacenter, "incarnation", inc)
	return nil
}

func (ctl *Controller) markUnschedulable(ctx context.Context, vm *apps.VMInstance, u *Unschedulable) error {
	reason := u.reason()
	prev := meta.FindStatusCondition(vm.Status.Conditions, apps.ConditionScheduled)
	if prev != nil && prev.Status == metav1.ConditionFalse && prev.Message == u.Message && prev.Reason == reason {
		return nil
	}
	vm = vm.DeepCopy()
	meta.SetStatusCondition(&vm.Status.Conditions, metav1.Condition{Type: apps.ConditionScheduled, Status: metav1.ConditionFalse, Reason: reason, Message: u.Message, ObservedGeneration: vm.Generation})
	err := ctl.c.Apps.Put().Namespace(vm.Namespace).Resource("vminstances").Name(vm.Name).SubResource("status").Body(vm).Do(ctx).Error()
	if apierrors.IsConflict(err) || apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("mark VM %s/%s unschedulable: %w", vm.Namespace, vm.Name, err)
	}
	switch {
	case reason == ReasonUnschedulable:
		ctl.recorder.Event(vm, corev1.EventTypeWarning, "FailedScheduling", u.Message)
	case prev == nil || prev.Reason != reason:
		// Waiting is normal; its progress goes to the condition, not to an event per step.
		ctl.recorder.Event(vm, corev1.EventTypeNormal, reason, u.Message)
	}
	return nil
}
