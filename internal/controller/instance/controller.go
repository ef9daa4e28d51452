// Package instance moves VMInstances between incarnations. When a node reports that the current
// incarnation ended, the VM is released from that node and, if its run strategy wants it running,
// queued for the scheduler as a new incarnation; a VM that should not run rests in Stopped. Crash
// loops back off by the count of consecutive failures (status.consecutiveFailures), which a
// clean end or a stable run resets, with jitter.
package instance

import (
	"context"
	"fmt"
	"hash/fnv"
	"log/slog"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/workqueue"

	"kumo.dev/kumo/internal/controller/events"
	apps "kumo.dev/kumo/pkg/apis/apps/v1alpha1"
	"kumo.dev/kumo/pkg/client"
)

const (
	// maxBackoff bounds the wait before restarting a VM that keeps failing.
	maxBackoff = 5 * time.Minute
	// StableRun is how long an incarnation must have run for its failure to start the count of
	// consecutive failures again: a VM that crashes once a day restarts at once.
	StableRun = 10 * time.Minute
	// backoffJitter spreads the restarts of VMs that failed together (a node lost, a shared
	// image broken): each wait is within ±20% of its nominal value.
	backoffJitter = 0.2
)

// Controller reconciles the lifecycle of VMs.
type Controller struct {
	c        *client.Client
	vms      cache.SharedIndexInformer
	queue    workqueue.TypedRateLimitingInterface[string]
	recorder record.EventRecorder
	now      func() time.Time
}

// NewController builds the controller on a shared VM informer.
func NewController(c *client.Client, vms cache.SharedIndexInformer) *Controller {
	ctl := &Controller{c: c, vms: vms, now: time.Now, queue: workqueue.NewTypedRateLimitingQueue(workqueue.DefaultTypedControllerRateLimiter[string]())}
	enqueue := func(obj interface{}) {
		if key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj); err == nil {
			ctl.queue.Add(key)
		}
	}
	vms.AddEventHandler(cache.ResourceEventHandlerFuncs{AddFunc: enqueue, UpdateFunc: func(old, o interface{}) {
		observeTransition(old.(*apps.VMInstance), o.(*apps.VMInstance), ctl.now())
		enqueue(o)
	}})
	return ctl
}

// Run reconciles until ctx ends.
func (ctl *Controller) Run(ctx context.Context, workers int) {
	defer ctl.queue.ShutDown()
	ctl.recorder = events.NewRecorder(ctx, ctl.c, "kumo-instance-controller")
	if !cache.WaitForCacheSync(ctx.Done(), ctl.vms.HasSynced) {
		return
	}
	for i := 0; i < workers; i++ {
		go func() {
			for {
				key, quit := ctl.queue.Get()
				if quit {
					return
				}
				if err := ctl.reconcile(ctx, key); err != nil {
					slog.Warn("reconcile VM lifecycle", "vm", key, "err", err)
					ctl.queue.AddRateLimited(key)
				} else {
					ctl.queue.Forget(key)
				}
				ctl.queue.Done(key)
			}
		}()
	}
	<-ctx.Done()
}

// Backoff is the nominal wait before restarting a VM whose last failures incarnations in a row
// failed: 1 s after the first, doubling up to maxBackoff. It does not depend on how often the VM
// was restarted over its life.
func Backoff(failures int32) time.Duration {
	if failures <= 0 {
		return 0
	}
	if failures > 10 {
		failures = 10
	}
	d := time.Second << (failures - 1)
	if d > maxBackoff {
		d = maxBackoff
	}
	return d
}

// jittered spreads d by up to ±backoffJitter, by a factor fixed for one incarnation of one VM:
// every reconcile of the same ended incarnation computes the same wait.
func jittered(d time.Duration, uid string, incarnation int64) time.Duration {
	h := fnv.New64a()
	fmt.Fprintf(h, "%s/%d", uid, incarnation)
	f := float64(h.Sum64()%10001)/10000*2 - 1 // in [-1, 1]
	return time.Duration(float64(d) * (1 + backoffJitter*f))
}

// failuresAfterExit is the count of consecutive failures once the ended incarnation is counted:
// 0 after a clean end or a stop, 1 after a failure that followed a stable run, one more otherwise.
func failuresAfterExit(vm *apps.VMInstance) int32 {
	e := vm.Status.LastExit
	if e == nil || e.Reason != apps.ExitFailed {
		return 0
	}
	// The incarnation ran from its binding (Scheduled turned True) to its exit.
	if c := meta.FindStatusCondition(vm.Status.Conditions, apps.ConditionScheduled); c != nil && c.Status == metav1.ConditionTrue &&
		e.Time.Sub(c.LastTransitionTime.Time) >= StableRun {
		return 1
	}
	return vm.Status.ConsecutiveFailures + 1
}

func (ctl *Controller) reconcile(ctx context.Context, key string) error {
	obj, exists, err := ctl.vms.GetStore().GetByKey(key)
	if err != nil || !exists {
		return err
	}
	vm := obj.(*apps.VMInstance).DeepCopy()
	if vm.DeletionTimestamp != nil {
		// A deleted VM that still exists waits for its node to report the end of its incarnation;
		// that status write removes its finalizer (see the API server), which deletes it.
		return nil
	}
	want := vm.WantsRunning()
	s := &vm.Status
	var reason, msg string
	switch {
	case s.Node != "" && vm.IncarnationEnded():
		// The node reported the end of the incarnation: count it and release the node (one write:
		// until it lands, every reconcile counts the same incarnation from the same status).
		node, exit := s.Node, s.LastExit
		s.ConsecutiveFailures = failuresAfterExit(vm)
		s.Node, s.Datacenter = "", ""
		meta.SetStatusCondition(&s.Conditions, metav1.Condition{Type: apps.ConditionScheduled, Status: metav1.ConditionFalse,
			Reason: "IncarnationEnded", Message: fmt.Sprintf("incarnation %d on node %s ended: %s", exit.Incarnation, node, exit.Reason)})
		if want {
			if wait := ctl.waitBeforeRestart(vm); wait > 0 {
				ctl.queue.AddAfter(key, wait)
				return nil
			}
			s.Phase, reason, msg = apps.VMPending, "Restarting", fmt.Sprintf("incarnation %d ended (%s); starting a new one", exit.Incarnation, exit.Reason)
		} else {
			reason, msg = "Stopped", fmt.Sprintf("incarnation %d ended (%s); run strategy %s keeps it stopped", exit.Incarnation, exit.Reason, vm.Spec.RunStrategy)
		}
	case s.Node == "" && s.Phase == apps.VMPending && !want:
		s.Phase, reason, msg = apps.VMStopped, "Stopped", fmt.Sprintf("run strategy %s: not started", vm.Spec.RunStrategy)
	case s.Node == "" && (s.Phase == apps.VMStopped || s.Phase == apps.VMFailed) && want:
		if wait := ctl.waitBeforeRestart(vm); wait > 0 {
			ctl.queue.AddAfter(key, wait)
			return nil
		}
		s.Phase, reason, msg = apps.VMPending, "Starting", "start requested"
	default:
		return nil
	}
	err = ctl.c.Apps.Put().Namespace(vm.Namespace).Resource("vminstances").Name(vm.Name).SubResource("status").Body(vm).Do(ctx).Error()
	if apierrors.IsConflict(err) || apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("update VM %s: %w", key, err)
	}
	ctl.recorder.Event(vm, corev1.EventTypeNormal, reason, msg)
	return nil
}

// waitBeforeRestart is the rest of the back-off after a failed incarnation, or 0. vm's status
// holds the count of consecutive failures including that incarnation.
func (ctl *Controller) waitBeforeRestart(vm *apps.VMInstance) time.Duration {
	e := vm.Status.LastExit
	if e == nil || e.Reason != apps.ExitFailed {
		return 0
	}
	wait := jittered(Backoff(vm.Status.ConsecutiveFailures), string(vm.UID), e.Incarnation)
	return e.Time.Add(wait).Sub(ctl.now())
}
