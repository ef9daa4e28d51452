package instance

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"sync"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest/fake"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"

	apps "kumo.dev/kumo/pkg/apis/apps/v1alpha1"
	"kumo.dev/kumo/pkg/client"
)

// statusRecorder records the status writes the controller sends.
type statusRecorder struct {
	mu     sync.Mutex
	writes []*apps.VMInstance
}

func (f *statusRecorder) client(t *testing.T) *client.Client {
	rc := &fake.RESTClient{
		NegotiatedSerializer: client.Codecs.WithoutConversion(),
		GroupVersion:         apps.SchemeGroupVersion,
		Client: fake.CreateHTTPClient(func(req *http.Request) (*http.Response, error) {
			if req.Method != http.MethodPut {
				t.Errorf("unexpected %s %s", req.Method, req.URL.Path)
			}
			body, _ := io.ReadAll(req.Body)
			vm := &apps.VMInstance{}
			if err := json.Unmarshal(body, vm); err != nil {
				t.Errorf("decode status write: %v", err)
			}
			f.mu.Lock()
			f.writes = append(f.writes, vm)
			f.mu.Unlock()
			return &http.Response{StatusCode: http.StatusOK, Header: http.Header{"Content-Type": {"application/json"}}, Body: io.NopCloser(bytes.NewReader(body))}, nil
		}),
	}
	return &client.Client{Apps: rc}
}

func (f *statusRecorder) last() *apps.VMInstance {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.writes) == 0 {
		return nil
	}
	return f.writes[len(f.writes)-1]
}

// exited is a VM whose incarnation inc, bound at bound, ended at end for reason.
func exited(reason apps.ExitReason, inc int64, bound, end time.Time) *apps.VMInstance {
	vm := &apps.VMInstance{ObjectMeta: metav1.ObjectMeta{Name: "vm", Namespace: "tenant-a", UID: types.UID("uid-1")}}
	vm.Spec.RunStrategy = apps.RunAlways
	vm.Status = apps.VMInstanceStatus{Phase: apps.VMFailed, Node: "n1", Incarnation: inc,
		LastExit: &apps.IncarnationExit{Incarnation: inc, Reason: reason, Time: metav1.NewTime(end)}}
	meta.SetStatusCondition(&vm.Status.Conditions, metav1.Condition{Type: apps.ConditionScheduled, Status: metav1.ConditionTrue,
		Reason: "Bound", LastTransitionTime: metav1.NewTime(bound)})
	return vm
}

// reconcileAt runs one reconcile of vm with the clock at now and returns the status written, or nil.
func reconcileAt(t *testing.T, vm *apps.VMInstance, now time.Time) *apps.VMInstance {
	t.Helper()
	api := &statusRecorder{}
	inf := cache.NewSharedIndexInformer(&cache.ListWatch{}, &apps.VMInstance{}, 0, cache.Indexers{})
	if err := inf.GetStore().Add(vm); err != nil {
		t.Fatal(err)
	}
	ctl := NewController(api.client(t), inf)
	defer ctl.queue.ShutDown()
	ctl.recorder = record.NewFakeRecorder(10)
	ctl.now = func() time.Time { return now }
	if err := ctl.reconcile(t.Context(), "tenant-a/vm"); err != nil {
		t.Fatal(err)
	}
	return api.last()
}

var t0 = time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)

// TestFirstCrashOfAnOftenRestartedVMWaitsSeconds: 20 restarts over the VM's life (stops,
// restarts, a node lost) do not make its next crash wait minutes.
func TestFirstCrashOfAnOftenRestartedVMWaitsSeconds(t *testing.T) {
	vm := exited(apps.ExitFailed, 21, t0.Add(-time.Hour), t0)
	vm.Status.Restarts = 20
	got := reconcileAt(t, vm, t0.Add(2*time.Second))
	if got == nil {
		t.Fatal("the VM waits although this is its first failure in a row (back-off by lifetime restarts)")
	}
	if got.Status.Phase != apps.VMPending || got.Status.Node != "" || got.Status.ConsecutiveFailures != 1 {
		t.Errorf("want Pending, released, 1 consecutive failure; got phase %s node %q failures %d", got.Status.Phase, got.Status.Node, got.Status.ConsecutiveFailures)
	}
}

func TestConsecutiveFailuresBackOffExponentially(t *testing.T) {
	// The sixth failure in a row (quick crashes): nominal wait 32 s, so ±20% is 25.6 s to 38.4 s.
	vm := exited(apps.ExitFailed, 6, t0.Add(-5*time.Second), t0)
	vm.Status.ConsecutiveFailures = 5
	if got := reconcileAt(t, vm, t0.Add(25*time.Second)); got != nil {
		t.Errorf("restarted after 25 s; the sixth failure in a row waits about 32 s (status %+v)", got.Status)
	}
	got := reconcileAt(t, vm, t0.Add(39*time.Second))
	if got == nil || got.Status.Phase != apps.VMPending || got.Status.ConsecutiveFailures != 6 {
		t.Fatalf("not restarted after 39 s with 6 failures counted: %+v", got)
	}
}

func TestStableRunResetsTheFailureCount(t *testing.T) {
	vm := exited(apps.ExitFailed, 30, t0.Add(-StableRun-time.Minute), t0)
	vm.Status.ConsecutiveFailures = 9
	got := reconcileAt(t, vm, t0.Add(2*time.Second))
	if got == nil || got.Status.ConsecutiveFailures != 1 || got.Status.Phase != apps.VMPending {
		t.Fatalf("a crash after %s of running should count as the first failure and restart within seconds: %+v", StableRun, got)
	}
	// The same crash after a short run keeps counting.
	vm = exited(apps.ExitFailed, 30, t0.Add(-time.Minute), t0)
	vm.Status.ConsecutiveFailures = 9
	if got := reconcileAt(t, vm, t0.Add(2*time.Second)); got != nil {
		t.Fatalf("a crash after a short run restarted at once: %+v", got.Status)
	}
}

func TestCleanEndClearsTheFailureCount(t *testing.T) {
	vm := exited(apps.ExitSucceeded, 4, t0.Add(-time.Minute), t0)
	vm.Status.ConsecutiveFailures = 7
	got := reconcileAt(t, vm, t0)
	if got == nil || got.Status.ConsecutiveFailures != 0 || got.Status.Phase != apps.VMPending {
		t.Fatalf("a guest shutdown of an Always VM restarts at once with no failures counted: %+v", got)
	}
}

func TestFailedVMThatShouldNotRunRecordsTheCount(t *testing.T) {
	vm := exited(apps.ExitFailed, 2, t0.Add(-time.Minute), t0)
	vm.Spec.RunStrategy = apps.RunOnce
	vm.Status.ConsecutiveFailures = 1
	got := reconcileAt(t, vm, t0)
	if got == nil || got.Status.Node != "" || got.Status.ConsecutiveFailures != 2 {
		t.Fatalf("a released Once VM should keep its failure count: %+v", got)
	}
	// A later start (kumo start) of that VM waits its back-off: 2 failures, nominal 2 s.
	stopped := got.DeepCopy()
	stopped.Status.Phase = apps.VMFailed
	stopped.Status.RunRequest = &apps.RunRequest{Action: apps.ActionStart, Time: metav1.NewTime(t0.Add(time.Second))}
	if got := reconcileAt(t, stopped, t0.Add(time.Second)); got != nil {
		t.Errorf("started 1 s after its second failure in a row: %+v", got.Status)
	}
	if got := reconcileAt(t, stopped, t0.Add(3*time.Second)); got == nil || got.Status.Phase != apps.VMPending {
		t.Errorf("not started 3 s after its second failure in a row: %+v", got)
	}
}

func TestBackoffIsCappedAndJittered(t *testing.T) {
	for n, want := range map[int32]time.Duration{0: 0, 1: time.Second, 2: 2 * time.Second, 9: 256 * time.Second, 10: maxBackoff, 1000: maxBackoff} {
		if got := Backoff(n); got != want {
			t.Errorf("Backoff(%d) = %s, want %s", n, got, want)
		}
	}
	seen := map[time.Duration]bool{}
	for i := 0; i < 200; i++ {
		d := jittered(100*time.Second, string(rune('a'+i%26))+string(rune('a'+i/26)), int64(i))
		if d < 80*time.Second || d > 120*time.Second {
			t.Fatalf("jittered wait %s outside 100 s ± 20%%", d)
		}
		seen[d.Round(time.Second)] = true
	}
	if len(seen) < 20 {
		t.Errorf("jitter barely spreads the waits: %d distinct values in 200", len(seen))
	}
	if jittered(time.Minute, "u", 3) != jittered(time.Minute, "u", 3) {
		t.Error("the wait of one incarnation changes between reconciles")
	}
}
