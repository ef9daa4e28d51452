package agent

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/cache"

	"kumo.dev/kumo/internal/storage/importer"
	apps "kumo.dev/kumo/pkg/apis/apps/v1alpha1"
)

// queueWithPendingDisk is a disk queue of node n1 whose watch and API hold one Pending disk.
func queueWithPendingDisk(t *testing.T, drv *recordingDriver, mutate ...func(*apps.VMDisk)) (*diskQueue, *fakeDiskAPI) {
	t.Helper()
	a, api, _ := startAgentWithDisk(t, drv)
	api.disk.Status = apps.VMDiskStatus{Phase: apps.DiskPending, Node: "n1"}
	for _, m := range mutate {
		m(api.disk)
	}
	store := cache.NewStore(cache.MetaNamespaceKeyFunc)
	store.Add(api.disk.DeepCopy())
	q := &diskQueue{a: a, inf: storeInformer{store: store}, active: map[string]preparation{}, queue: newPrepareQueue()}
	t.Cleanup(q.queue.ShutDown)
	return q, api
}

func lastStatus(api *fakeDiskAPI) apps.VMDiskStatus {
	api.mu.Lock()
	defer api.mu.Unlock()
	return *api.disk.Status.DeepCopy()
}

// A preparation that fails for a reason that may pass (an rbd timeout) leaves the disk Pending
// with a Ready condition saying it is retried, and the queue tries again (after its back-off)
// until the disk is Ready. Failed would be for good: no VM could ever use the disk.
func TestATransientPrepareErrorIsRetriedNotFailed(t *testing.T) {
	prepareRetryMin, prepareRetryMax = 10*time.Millisecond, 50*time.Millisecond
	defer func() { prepareRetryMin, prepareRetryMax = 5*time.Second, 5*time.Minute }()
	timeout := errors.New("rbd clone: exit status 110: connection timed out")
	drv := &recordingDriver{missingUntilCreated: true, createErrs: []error{timeout, timeout}}
	q, api := queueWithPendingDisk(t, drv)

	// One attempt: the error goes back to the queue's back-off, the disk is not Failed.
	err := q.prepare(context.Background(), "t/data")
	if err == nil || !strings.Contains(err.Error(), "timed out") {
		t.Fatalf("prepare with an rbd timeout: err = %v, want it returned for a retry", err)
	}
	st := lastStatus(api)
	c := meta.FindStatusCondition(st.Conditions, "Ready")
	if st.Phase != apps.DiskPending || c == nil || c.Reason != ReasonPrepareRetrying || !strings.Contains(c.Message, "timed out") {
		t.Fatalf("after a transient failure: phase %s, Ready condition %+v; want Pending, %s naming the error", st.Phase, c, ReasonPrepareRetrying)
	}

	// The queue's workers retry it until it is made.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	q.queue.AddRateLimited("t/data")
	go q.work(ctx)
	for deadline := time.Now().Add(30 * time.Second); lastStatus(api).Phase != apps.DiskReady; {
		if time.Now().After(deadline) {
			t.Fatalf("the disk is not Ready after its transient failures: %+v", lastStatus(api))
		}
		time.Sleep(10 * time.Millisecond)
	}
	api.mu.Lock()
	for _, s := range api.statuses {
		if s.Phase == apps.DiskFailed {
			t.Errorf("a transient failure reported the disk Failed: %+v", s)
		}
	}
	api.mu.Unlock()
	drv.mu.Lock()
	defer drv.mu.Unlock()
	if len(drv.created) != 3 {
		t.Errorf("Create called %d times, want 3 (two failures, then success)", len(drv.created))
	}
	if c := meta.FindStatusCondition(lastStatus(api).Conditions, "Ready"); c == nil || c.Reason != "Prepared" {
		t.Errorf("Ready condition once prepared: %+v", c)
	}
}

// A refused image fails the disk for good, naming the reason, and is not tried again.
func TestARefusedImageFailsTheDisk(t *testing.T) {
	drv := &recordingDriver{missingUntilCreated: true, createErrs: []error{&importer.RefusedError{Reason: "the image names a backing file"}}}
	q, api := queueWithPendingDisk(t, drv)
	if err := q.prepare(context.Background(), "t/data"); err != nil {
		t.Fatalf("prepare of a refused image: err = %v, want nil (failed for good, not retried)", err)
	}
	st := lastStatus(api)
	c := meta.FindStatusCondition(st.Conditions, "Ready")
	if st.Phase != apps.DiskFailed || c == nil || c.Reason != "ImageRefused" || !strings.Contains(c.Message, "backing file") {
		t.Fatalf("after a refused image: phase %s, Ready condition %+v; want Failed, ImageRefused", st.Phase, c)
	}
	if q.queue.Len() != 0 {
		t.Errorf("a Failed disk is queued again")
	}
}

// A clone whose source disk does not exist is a user error no retry fixes: the disk is Failed.
func TestACloneOfADiskThatDoesNotExistFails(t *testing.T) {
	drv := &recordingDriver{missingUntilCreated: true}
	q, api := queueWithPendingDisk(t, drv, func(d *apps.VMDisk) { d.Spec.Source.Disk = &apps.DiskSource{Name: "missing"} })
	if err := q.prepare(context.Background(), "t/data"); err != nil {
		t.Fatalf("prepare of a clone of a missing disk: err = %v, want nil (failed for good)", err)
	}
	st := lastStatus(api)
	c := meta.FindStatusCondition(st.Conditions, "Ready")
	if st.Phase != apps.DiskFailed || c == nil || !strings.Contains(c.Message, "source disk missing") {
		t.Fatalf("phase %s, Ready condition %+v; want Failed naming source disk missing", st.Phase, c)
	}
	if len(drv.created) != 0 {
		t.Errorf("Create called for a clone whose source does not exist: %v", drv.created)
	}
}

// The status the agent writes while preparing (progress, a retrying condition) does not queue
// the disk again: that would retry a failed preparation at once, past the back-off.
func TestOwnStatusWritesDoNotRequeueTheDisk(t *testing.T) {
	old := &apps.VMDisk{Status: apps.VMDiskStatus{Phase: apps.DiskPending, Node: "n1"}}
	cur := old.DeepCopy()
	cur.Status.Phase, cur.Status.Progress = apps.DiskImporting, "40%"
	meta.SetStatusCondition(&cur.Status.Conditions, metav1.Condition{Type: "Ready", Status: metav1.ConditionFalse, Reason: ReasonPrepareRetrying, Message: "rbd: timed out"})
	if preparationChanged(old, cur) {
		t.Errorf("progress and a retrying condition queue the disk again")
	}
	moved := cur.DeepCopy()
	moved.Generation++
	if !preparationChanged(cur, moved) {
		t.Errorf("a spec change does not queue the disk")
	}
}
