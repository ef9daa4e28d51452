package agent

import (
	"context"
	"net/http/httptest"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"

	apps "kumo.dev/kumo/pkg/apis/apps/v1alpha1"
	"kumo.dev/kumo/pkg/client"
)

// deletedVMAgent is an agent of node n1 whose watch holds vm, deleted (it keeps
// IncarnationFinalizer) while bound to n1 in phase.
func deletedVMAgent(t *testing.T, phase apps.VMPhase) (*Agent, *fakeVMAPI, *apps.VMInstance) {
	t.Helper()
	api := &fakeVMAPI{}
	srv := httptest.NewServer(api)
	t.Cleanup(srv.Close)
	c, err := client.New(&rest.Config{Host: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	now := metav1.Now()
	vm := &apps.VMInstance{
		ObjectMeta: metav1.ObjectMeta{Namespace: "t", Name: "vm", UID: types.UID("5d0c7a3e-2a44-4d55-9d0e-8e2b1c3d4e5f"), ResourceVersion: "7",
			DeletionTimestamp: &now, Finalizers: []string{apps.IncarnationFinalizer}},
		Spec:   apps.VMInstanceSpec{RunStrategy: apps.RunAlways},
		Status: apps.VMInstanceStatus{Node: "n1", Incarnation: 3, Phase: phase},
	}
	store := cache.NewStore(cache.MetaNamespaceKeyFunc)
	store.Add(vm)
	a := &Agent{opts: Options{Node: "n1", DataDir: t.TempDir()}, c: c, vms: storeInformer{store: store},
		running: map[string]*runtimeVM{},
		queue:   workqueue.NewTypedRateLimitingQueue(workqueue.DefaultTypedControllerRateLimiter[string]())}
	t.Cleanup(a.queue.ShutDown)
	return a, api, vm
}

func exits(api *fakeVMAPI) []*apps.IncarnationExit {
	api.mu.Lock()
	defer api.mu.Unlock()
	var out []*apps.IncarnationExit
	for _, st := range api.statuses {
		if st.LastExit != nil {
			out = append(out, st.LastExit)
		}
	}
	return out
}

// TestDeletedVMsExitIsReportedOnlyOnceItsQEMUIsGone: the exit of a deleted VM's incarnation is
// what lets the VM object, and with it its disks, go; while a process holds the run directory's
// QEMU lock no exit is reported, once the lock is free it is.
func TestDeletedVMsExitIsReportedOnlyOnceItsQEMUIsGone(t *testing.T) {
	a, api, vm := deletedVMAgent(t, apps.VMRunning)
	runDir := a.runDir(string(vm.UID))
	if err := os.MkdirAll(runDir, 0o700); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(filepath.Join(runDir, "qemu.lock"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		t.Fatal(err)
	}
	_ = a.sync(context.Background(), "t/vm")
	if e := exits(api); len(e) != 0 {
		t.Fatalf("exit %+v reported for a deleted VM while its QEMU lock is held", e[0])
	}
	f.Close() // the QEMU is gone
	if err := a.sync(context.Background(), "t/vm"); err != nil {
		t.Fatal(err)
	}
	if e := exits(api); len(e) != 1 || e[0].Incarnation != 3 || e[0].Node != "n1" {
		t.Fatalf("want the exit of incarnation 3 on n1 reported once the QEMU is gone, got %+v", e)
	}
}

// TestDeletedVMThatHasNotStartedIsReportedEnded: a deleted VM bound to the node but not started
// is not started; its incarnation is reported ended so the VM goes.
func TestDeletedVMThatHasNotStartedIsReportedEnded(t *testing.T) {
	a, api, _ := deletedVMAgent(t, apps.VMScheduled)
	if err := a.sync(context.Background(), "t/vm"); err != nil {
		t.Fatal(err)
	}
	if e := exits(api); len(e) != 1 || e[0].Incarnation != 3 || e[0].Reason != apps.ExitStopped || e[0].Message != "deleted before it started" {
		t.Fatalf("want incarnation 3 reported stopped before it started, got %+v", e)
	}
}
