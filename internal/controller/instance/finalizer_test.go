package instance

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"slices"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest/fake"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"

	apps "kumo.dev/kumo/pkg/apis/apps/v1alpha1"
	"kumo.dev/kumo/pkg/client"
)

// write is one request the controller sent: its path and the VM it carried.
type write struct {
	path string
	vm   *apps.VMInstance
}

// reconcileDeleted runs one reconcile of a deleted vm and returns every write it sent.
func reconcileDeleted(t *testing.T, vm *apps.VMInstance) []write {
	t.Helper()
	var writes []write
	rc := &fake.RESTClient{
		NegotiatedSerializer: client.Codecs.WithoutConversion(),
		GroupVersion:         apps.SchemeGroupVersion,
		Client: fake.CreateHTTPClient(func(req *http.Request) (*http.Response, error) {
			body, _ := io.ReadAll(req.Body)
			got := &apps.VMInstance{}
			if err := json.Unmarshal(body, got); err != nil {
				t.Errorf("decode %s %s: %v", req.Method, req.URL.Path, err)
			}
			writes = append(writes, write{path: req.Method + " " + req.URL.Path, vm: got})
			return &http.Response{StatusCode: http.StatusOK, Header: http.Header{"Content-Type": {"application/json"}}, Body: io.NopCloser(bytes.NewReader(body))}, nil
		}),
	}
	inf := cache.NewSharedIndexInformer(&cache.ListWatch{}, &apps.VMInstance{}, 0, cache.Indexers{})
	if err := inf.GetStore().Add(vm); err != nil {
		t.Fatal(err)
	}
	ctl := NewController(&client.Client{Apps: rc}, inf)
	defer ctl.queue.ShutDown()
	ctl.recorder = record.NewFakeRecorder(10)
	if err := ctl.reconcile(t.Context(), "tenant-a/vm"); err != nil {
		t.Fatal(err)
	}
	return writes
}

// deletedVM is a deleted VM holding IncarnationFinalizer whose incarnation 3 is bound to n1 and
// runs (its node has not reported an exit).
func deletedVM() *apps.VMInstance {
	now := metav1.Now()
	vm := &apps.VMInstance{ObjectMeta: metav1.ObjectMeta{Name: "vm", Namespace: "tenant-a", UID: types.UID("uid-1"), ResourceVersion: "7",
		DeletionTimestamp: &now, Finalizers: []string{"example.com/other", apps.IncarnationFinalizer}}}
	vm.Spec.RunStrategy = apps.RunAlways
	vm.Status = apps.VMInstanceStatus{Phase: apps.VMStopping, Node: "n1", Incarnation: 3,
		LastExit: &apps.IncarnationExit{Incarnation: 2, Reason: apps.ExitStopped, Time: now}}
	return vm
}

// released checks that writes is the one update removing IncarnationFinalizer (and only it),
// sent on the main resource with the resourceVersion read.
func released(t *testing.T, writes []write) {
	t.Helper()
	if len(writes) != 1 {
		t.Fatalf("want one update removing the finalizer, got %d writes", len(writes))
	}
	w := writes[0]
	if w.path != "PUT /namespaces/tenant-a/vminstances/vm" {
		t.Errorf("finalizer removed through %s; want an update of the VM itself", w.path)
	}
	if !slices.Equal(w.vm.Finalizers, []string{"example.com/other"}) || w.vm.ResourceVersion != "7" {
		t.Errorf("want finalizers [example.com/other] at resourceVersion 7, got %v at %q", w.vm.Finalizers, w.vm.ResourceVersion)
	}
}

// TestDeletedVMIsKeptUntilItsNodeReportsTheIncarnationEnded: the VM object (which keeps its disks
// taken) goes only after its node reported the exit of the bound incarnation.
func TestDeletedVMIsKeptUntilItsNodeReportsTheIncarnationEnded(t *testing.T) {
	vm := deletedVM()
	if w := reconcileDeleted(t, vm); len(w) != 0 {
		t.Fatalf("a deleted VM whose incarnation still runs was written (%s, finalizers %v): its QEMU may still write its disks", w[0].path, w[0].vm.Finalizers)
	}
	vm.Status.Phase = apps.VMStopped
	vm.Status.LastExit = &apps.IncarnationExit{Incarnation: 3, Node: "n1", Reason: apps.ExitStopped, Time: metav1.Now()}
	released(t, reconcileDeleted(t, vm))
}

// TestDeletedVMThatWasNeverBoundGoesAtOnce: a Pending VM (no node) or a stopped, released one
// has no QEMU: its deletion does not wait.
func TestDeletedVMThatWasNeverBoundGoesAtOnce(t *testing.T) {
	vm := deletedVM()
	vm.Status = apps.VMInstanceStatus{Phase: apps.VMPending}
	released(t, reconcileDeleted(t, vm))

	vm = deletedVM()
	vm.Status.Node, vm.Status.Phase = "", apps.VMStopped
	released(t, reconcileDeleted(t, vm))
}

// TestDeletedVMWithoutTheFinalizerIsLeftAlone: objects created before the finalizer existed
// are deleted by the API server directly; the controller writes nothing.
func TestDeletedVMWithoutTheFinalizerIsLeftAlone(t *testing.T) {
	vm := deletedVM()
	vm.Finalizers = []string{"example.com/other"}
	vm.Status.LastExit.Incarnation = 3
	if w := reconcileDeleted(t, vm); len(w) != 0 {
		t.Errorf("wrote %s to a VM without the finalizer", w[0].path)
	}
}
