package agent

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"

	apps "kumo.dev/kumo/pkg/apis/apps/v1alpha1"
	"kumo.dev/kumo/pkg/client"
)

// fakeVMAPI records the statuses written for VMs.
type fakeVMAPI struct {
	mu       sync.Mutex
	statuses []apps.VMInstanceStatus
}

func (f *fakeVMAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	if r.Method != http.MethodPut {
		w.WriteHeader(http.StatusNotFound)
		json.NewEncoder(w).Encode(metav1.Status{Status: metav1.StatusFailure, Reason: metav1.StatusReasonNotFound, Code: http.StatusNotFound})
		return
	}
	body, _ := io.ReadAll(r.Body)
	vm := &apps.VMInstance{}
	if err := json.Unmarshal(body, vm); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	f.statuses = append(f.statuses, vm.Status)
	w.Write(body)
}

// A VM the agent has no incarnation registered for, while a process holds its run directory's
// QEMU lock (a run directory whose state could not be read is left alone by reattach): the agent
// must not report its incarnation ended, or the next one would start, perhaps on another node,
// on the same disks. It reports the VM unknown instead.
func TestNoExitReportedWhileTheRunDirectoryLockIsHeld(t *testing.T) {
	api := &fakeVMAPI{}
	srv := httptest.NewServer(api)
	defer srv.Close()
	c, err := client.New(&rest.Config{Host: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	vm := &apps.VMInstance{
		TypeMeta:   metav1.TypeMeta{APIVersion: "apps.cozystack.io/v1alpha1", Kind: "VMInstance"},
		ObjectMeta: metav1.ObjectMeta{Namespace: "t", Name: "vm", UID: types.UID("0b6c7a3e-2a44-4d55-9d0e-8e2b1c3d4e5f"), ResourceVersion: "7"},
		Status:     apps.VMInstanceStatus{Node: "n1", Incarnation: 3, Phase: apps.VMRunning},
	}
	store := cache.NewStore(cache.MetaNamespaceKeyFunc)
	store.Add(vm)
	a := &Agent{opts: Options{Node: "n1", DataDir: t.TempDir()}, c: c, vms: storeInformer{store: store},
		running: map[string]*runtimeVM{},
		queue:   workqueue.NewTypedRateLimitingQueue(workqueue.DefaultTypedControllerRateLimiter[string]())}
	defer a.queue.ShutDown()

	// The QEMU of the run directory, as far as its lock tells: this test holds the lock.
	runDir := a.runDir(string(vm.UID))
	if err := os.MkdirAll(runDir, 0o700); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(filepath.Join(runDir, "qemu.lock"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		t.Fatal(err)
	}

	_ = a.sync(context.Background(), "t/vm")
	api.mu.Lock()
	defer api.mu.Unlock()
	for _, st := range api.statuses {
		if st.LastExit != nil || st.Phase == apps.VMFailed || st.Phase == apps.VMStopped {
			t.Fatalf("the agent reported incarnation %d ended (%+v) while its run directory's lock is held", vm.Status.Incarnation, st.LastExit)
		}
	}
	if len(api.statuses) == 0 {
		t.Fatal("the agent reported nothing: want the VM reported unknown")
	}
	c0 := meta.FindStatusCondition(api.statuses[len(api.statuses)-1].Conditions, apps.ConditionReady)
	if c0 == nil || c0.Status != metav1.ConditionUnknown || c0.Reason != reasonUnresponsive {
		t.Fatalf("Ready condition = %+v, want Unknown/%s", c0, reasonUnresponsive)
	}
}
