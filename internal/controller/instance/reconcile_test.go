package instance

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/workqueue"

	apps "kumo.dev/kumo/pkg/apis/apps/v1alpha1"
	"kumo.dev/kumo/pkg/client"
)

const statusPath = "/apis/apps.cozystack.io/v1alpha1/namespaces/tenant-a/vminstances/vm1/status"

// fakeAPI is the API server as the controller sees it: it takes PUTs of a VM's status
// subresource, keeps them, and answers with the code a test chose.
type fakeAPI struct {
	t    *testing.T
	mu   sync.Mutex
	puts []*apps.VMInstance
	code int // answer to a status write; 0 means 200
}

func (f *fakeAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if r.Method != http.MethodPut || r.URL.Path != statusPath {
		f.t.Errorf("unexpected request %s %s", r.Method, r.URL.Path)
		http.Error(w, "unexpected", http.StatusInternalServerError)
		return
	}
	body, _ := io.ReadAll(r.Body)
	vm := &apps.VMInstance{}
	if err := json.Unmarshal(body, vm); err != nil {
		f.t.Errorf("status body: %v\n%s", err, body)
	}
	f.puts = append(f.puts, vm)
	w.Header().Set("Content-Type", "application/json")
	gr := schema.GroupResource{Group: apps.SchemeGroupVersion.Group, Resource: "vminstances"}
	switch f.code {
	case 0:
		_, _ = w.Write(body)
	case http.StatusConflict:
		writeStatus(w, apierrors.NewConflict(gr, vm.Name, nil))
	case http.StatusNotFound:
		writeStatus(w, apierrors.NewNotFound(gr, vm.Name))
	default:
		writeStatus(w, apierrors.NewInternalError(io.ErrUnexpectedEOF))
	}
}

func writeStatus(w http.ResponseWriter, err *apierrors.StatusError) {
	s := err.ErrStatus
	s.Kind, s.APIVersion = "Status", "v1"
	w.WriteHeader(int(s.Code))
	_ = json.NewEncoder(w).Encode(s)
}

func (f *fakeAPI) writes() []*apps.VMInstance {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]*apps.VMInstance(nil), f.puts...)
}

// recordingQueue is the controller's queue, remembering what was put back for later.
type recordingQueue struct {
	workqueue.TypedRateLimitingInterface[string]
	mu    sync.Mutex
	after map[string]time.Duration
}

func (q *recordingQueue) AddAfter(key string, d time.Duration) {
	q.mu.Lock()
	q.after[key] = d
	q.mu.Unlock()
	q.TypedRateLimitingInterface.AddAfter(key, d)
}

// harness is a Controller on a fake API server, with its informer's store filled by the test.
type harness struct {
	ctl    *Controller
	api    *fakeAPI
	events *record.FakeRecorder
	queue  *recordingQueue
}

func newHarness(t *testing.T, vms ...*apps.VMInstance) *harness {
	t.Helper()
	api := &fakeAPI{t: t}
	srv := httptest.NewServer(api)
	t.Cleanup(srv.Close)
	c, err := client.New(&rest.Config{Host: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	inf := client.NewInformer(c.Apps, "vminstances", &apps.VMInstance{}, "", 0)
	for _, vm := range vms {
		if err := inf.GetStore().Add(vm); err != nil {
			t.Fatal(err)
		}
	}
	ctl := NewController(c, inf)
	q := &recordingQueue{TypedRateLimitingInterface: ctl.queue, after: map[string]time.Duration{}}
	t.Cleanup(q.ShutDown)
	ctl.queue = q
	events := record.NewFakeRecorder(10)
	ctl.recorder = events
	return &harness{ctl: ctl, api: api, events: events, queue: q}
}

// reconcile runs one reconcile of tenant-a/vm1 and returns the status written (nil if none) and
// the events recorded.
func (h *harness) reconcile(t *testing.T) (*apps.VMInstance, []string) {
	t.Helper()
	if err := h.ctl.reconcile(context.Background(), "tenant-a/vm1"); err != nil {
		t.Fatalf("reconcile: %v", err)
	}
	return h.result(t)
}

func (h *harness) result(t *testing.T) (*apps.VMInstance, []string) {
	t.Helper()
	var events []string
	for len(h.events.Events) > 0 {
		events = append(events, <-h.events.Events)
	}
	w := h.api.writes()
	switch len(w) {
	case 0:
		return nil, events
	case 1:
		return w[0], events
	}
	t.Fatalf("%d status writes for one reconcile: %+v", len(w), w)
	return nil, nil
}

var longAgo = metav1.NewTime(time.Now().Add(-time.Hour))

// vm is tenant-a/vm1 with a run strategy and status.
func vm(strategy apps.RunStrategy, s apps.VMInstanceStatus) *apps.VMInstance {
	return &apps.VMInstance{
		ObjectMeta: metav1.ObjectMeta{Namespace: "tenant-a", Name: "vm1", UID: "uid-1", ResourceVersion: "42"},
		Spec:       apps.VMInstanceSpec{RunStrategy: strategy},
		Status:     s,
	}
}

// ended is the status a node reports when incarnation 3 on n1 ended for reason.
func ended(reason apps.ExitReason, at metav1.Time) apps.VMInstanceStatus {
	return apps.VMInstanceStatus{Phase: apps.VMStopped, Node: "n1", Datacenter: "dc1", Incarnation: 3, Restarts: 2,
		LastExit: &apps.IncarnationExit{Incarnation: 3, Reason: reason, Message: "exit", Time: at}}
}

func TestEndedIncarnationIsReleasedAndRestartedWhenTheRunStrategyWantsIt(t *testing.T) {
	h := newHarness(t, vm(apps.RunAlways, ended(apps.ExitSucceeded, longAgo)))
	got, events := h.reconcile(t)
	if got == nil {
		t.Fatal("no status written")
	}
	s := got.Status
	if s.Node != "" || s.Datacenter != "" || s.Phase != apps.VMPending {
		t.Errorf("node %q datacenter %q phase %q, want the node released and the VM Pending for the scheduler", s.Node, s.Datacenter, s.Phase)
	}
	if s.Incarnation != 3 || s.Restarts != 2 || s.LastExit == nil || s.LastExit.Incarnation != 3 {
		t.Errorf("the controller must leave incarnation, restarts and lastExit to their owners: %+v", s)
	}
	cond := meta.FindStatusCondition(s.Conditions, apps.ConditionScheduled)
	if cond == nil || cond.Status != metav1.ConditionFalse || cond.Reason != "IncarnationEnded" || cond.Message != "incarnation 3 on node n1 ended: Succeeded" {
		t.Errorf("Scheduled condition %+v", cond)
	}
	if got.ResourceVersion != "42" {
		t.Errorf("status written with resourceVersion %q, want the one read (42) so that a concurrent write conflicts", got.ResourceVersion)
	}
	if want := "Normal Restarting incarnation 3 ended (Succeeded); starting a new one"; len(events) != 1 || events[0] != want {
		t.Errorf("events %q, want %q", events, want)
	}
}

func TestEndedIncarnationFollowsTheRunStrategy(t *testing.T) {
	startAfterExit := &apps.RunRequest{Action: apps.ActionStart, Time: metav1.NewTime(longAgo.Add(time.Minute))}
	startBeforeExit := &apps.RunRequest{Action: apps.ActionStart, Time: metav1.NewTime(longAgo.Add(-time.Minute))}
	stop := &apps.RunRequest{Action: apps.ActionStop, Time: metav1.NewTime(longAgo.Add(-time.Minute))}
	for _, tc := range []struct {
		name     string
		strategy apps.RunStrategy
		exit     apps.ExitReason
		request  *apps.RunRequest
		restart  bool // kumo restart ended the incarnation
		want     bool // a new incarnation is queued
	}{
		{"Always after a guest shutdown", apps.RunAlways, apps.ExitSucceeded, nil, false, true},
		{"Always after a crash", apps.RunAlways, apps.ExitFailed, nil, false, true},
		{"empty strategy is Always", "", apps.ExitFailed, nil, false, true},
		{"Halted", apps.RunHalted, apps.ExitStopped, nil, false, false},
		{"Manual after a guest shutdown", apps.RunManual, apps.ExitSucceeded, startBeforeExit, false, false},
		{"Manual after kumo restart", apps.RunManual, apps.ExitStopped, startBeforeExit, true, true},
		{"Manual started again after the exit", apps.RunManual, apps.ExitSucceeded, startAfterExit, false, true},
		{"Manual stopped", apps.RunManual, apps.ExitStopped, stop, false, false},
		{"RerunOnFailure after a crash", apps.RunRerunOnFailure, apps.ExitFailed, nil, false, true},
		{"RerunOnFailure after a guest shutdown", apps.RunRerunOnFailure, apps.ExitSucceeded, nil, false, false},
		{"RerunOnFailure stopped", apps.RunRerunOnFailure, apps.ExitStopped, stop, false, false},
		{"Once after a crash", apps.RunOnce, apps.ExitFailed, nil, false, false},
		{"Once after kumo restart", apps.RunOnce, apps.ExitStopped, nil, true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := ended(tc.exit, longAgo)
			s.RunRequest = tc.request
			if tc.restart {
				s.RestartIncarnation = 3
			}
			h := newHarness(t, vm(tc.strategy, s))
			got, events := h.reconcile(t)
			if got == nil {
				t.Fatal("no status written: the node must be released in every case")
			}
			if got.Status.Node != "" || got.Status.Datacenter != "" {
				t.Errorf("node %q datacenter %q not released", got.Status.Node, got.Status.Datacenter)
			}
			wantPhase, wantEvent := apps.VMStopped, "Normal Stopped incarnation 3 ended ("+string(tc.exit)+"); run strategy "+string(tc.strategy)+" keeps it stopped"
			if tc.want {
				wantPhase, wantEvent = apps.VMPending, "Normal Restarting incarnation 3 ended ("+string(tc.exit)+"); starting a new one"
			}
			if got.Status.Phase != wantPhase {
				t.Errorf("phase %q, want %q", got.Status.Phase, wantPhase)
			}
			if len(events) != 1 || events[0] != wantEvent {
				t.Errorf("events %q, want %q", events, wantEvent)
			}
		})
	}
}

func TestCrashedVMWaitsBeforeItsNextIncarnation(t *testing.T) {
	h := newHarness(t, vm(apps.RunAlways, ended(apps.ExitFailed, metav1.Now())))
	got, events := h.reconcile(t)
	if got != nil || len(events) != 0 {
		t.Fatalf("a VM that just crashed was restarted at once: status %+v, events %q", got, events)
	}
	d, ok := h.queue.after["tenant-a/vm1"]
	if !ok || d <= 0 || d > 2*maxBackoff {
		t.Errorf("requeued after %v (queued: %v), want a wait in (0, %v]", d, ok, 2*maxBackoff)
	}

	// A crash long past its back-off restarts at once; so does a clean exit just now.
	for name, s := range map[string]apps.VMInstanceStatus{
		"crash an hour ago":   ended(apps.ExitFailed, longAgo),
		"guest shutdown now":  ended(apps.ExitSucceeded, metav1.Now()),
		"stopped for restart": ended(apps.ExitStopped, metav1.Now()),
	} {
		h := newHarness(t, vm(apps.RunAlways, s))
		if got, _ := h.reconcile(t); got == nil || got.Status.Phase != apps.VMPending {
			t.Errorf("%s: status %+v, want Pending at once", name, got)
		}
		if d, ok := h.queue.after["tenant-a/vm1"]; ok {
			t.Errorf("%s: requeued after %v instead of restarted", name, d)
		}
	}
}

func TestStoppedVMStartsWhenItsRunStrategyWantsItRunning(t *testing.T) {
	start := &apps.RunRequest{Action: apps.ActionStart, Time: metav1.Now()}
	for _, tc := range []struct {
		name     string
		strategy apps.RunStrategy
		phase    apps.VMPhase
		exit     *apps.IncarnationExit
		request  *apps.RunRequest
	}{
		{"kumo start of a Manual VM", apps.RunManual, apps.VMStopped, &apps.IncarnationExit{Incarnation: 3, Reason: apps.ExitStopped, Time: longAgo}, start},
		{"Always after a failed start", apps.RunAlways, apps.VMFailed, &apps.IncarnationExit{Incarnation: 3, Reason: apps.ExitFailed, Time: longAgo}, nil},
		{"Always without an incarnation yet", apps.RunAlways, apps.VMStopped, nil, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, vm(tc.strategy, apps.VMInstanceStatus{Phase: tc.phase, Incarnation: 3, LastExit: tc.exit, RunRequest: tc.request}))
			got, events := h.reconcile(t)
			if got == nil || got.Status.Phase != apps.VMPending {
				t.Fatalf("status %+v, want Pending", got)
			}
			if want := "Normal Starting start requested"; len(events) != 1 || events[0] != want {
				t.Errorf("events %q, want %q", events, want)
			}
		})
	}
}

func TestPendingVMThatShouldNotRunRestsInStopped(t *testing.T) {
	h := newHarness(t, vm(apps.RunHalted, apps.VMInstanceStatus{Phase: apps.VMPending}))
	got, events := h.reconcile(t)
	if got == nil || got.Status.Phase != apps.VMStopped {
		t.Fatalf("status %+v, want Stopped", got)
	}
	if want := "Normal Stopped run strategy Halted: not started"; len(events) != 1 || events[0] != want {
		t.Errorf("events %q, want %q", events, want)
	}
}

func TestVMsOnTheirWayAreLeftAlone(t *testing.T) {
	deleting := vm(apps.RunAlways, ended(apps.ExitFailed, longAgo))
	now := metav1.Now()
	deleting.DeletionTimestamp = &now
	exit1 := &apps.IncarnationExit{Incarnation: 1, Reason: apps.ExitFailed, Time: longAgo}
	for name, v := range map[string]*apps.VMInstance{
		"running incarnation 2 after 1 ended": vm(apps.RunAlways, apps.VMInstanceStatus{Phase: apps.VMRunning, Node: "n1", Incarnation: 2, LastExit: exit1}),
		"scheduled, not started yet":          vm(apps.RunAlways, apps.VMInstanceStatus{Phase: apps.VMScheduled, Node: "n1", Incarnation: 1}),
		"stopping on its node":                vm(apps.RunHalted, apps.VMInstanceStatus{Phase: apps.VMStopping, Node: "n1", Incarnation: 1}),
		"pending for the scheduler":           vm(apps.RunAlways, apps.VMInstanceStatus{Phase: apps.VMPending}),
		"stopped and meant to be":             vm(apps.RunHalted, apps.VMInstanceStatus{Phase: apps.VMStopped, Incarnation: 1, LastExit: &apps.IncarnationExit{Incarnation: 1, Reason: apps.ExitStopped, Time: longAgo}}),
		"being deleted":                       deleting,
	} {
		h := newHarness(t, v)
		if got, events := h.reconcile(t); got != nil || len(events) != 0 {
			t.Errorf("%s: status written %+v, events %q", name, got, events)
		}
	}
	// A VM that is gone from the cache is not an error.
	h := newHarness(t)
	if got, events := h.reconcile(t); got != nil || len(events) != 0 {
		t.Errorf("absent VM: status written %+v, events %q", got, events)
	}
}

func TestStatusWriteErrors(t *testing.T) {
	for _, tc := range []struct {
		code    int
		wantErr string // "" : dropped quietly, the next watch event brings the VM back
	}{
		{http.StatusConflict, ""},
		{http.StatusNotFound, ""},
		{http.StatusInternalServerError, "update VM tenant-a/vm1: "},
	} {
		h := newHarness(t, vm(apps.RunAlways, ended(apps.ExitSucceeded, longAgo)))
		h.api.code = tc.code
		err := h.ctl.reconcile(context.Background(), "tenant-a/vm1")
		if tc.wantErr == "" && err != nil || tc.wantErr != "" && (err == nil || !strings.HasPrefix(err.Error(), tc.wantErr)) {
			t.Errorf("HTTP %d: reconcile = %v, want %q", tc.code, err, tc.wantErr)
		}
		if got, events := h.result(t); got == nil || len(events) != 0 {
			t.Errorf("HTTP %d: write %v, events %q: want one write attempt and no event for a write that did not happen", tc.code, got != nil, events)
		}
	}
}
