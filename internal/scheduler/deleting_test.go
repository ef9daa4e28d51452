package scheduler

import (
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	apps "kumo.dev/kumo/pkg/apis/apps/v1alpha1"
)

// deleting marks vm deleted; it stays (IncarnationFinalizer) until its incarnation ended.
func (f *fixture) deleting(vm *apps.VMInstance) {
	now := metav1.Now()
	vm.DeletionTimestamp, vm.Finalizers = &now, []string{apps.IncarnationFinalizer}
	f.inf.VMs.GetStore().Update(vm)
}

// TestDeletedVMIsNeverBound: a deleted VM waiting for a node gets none.
func TestDeletedVMIsNeverBound(t *testing.T) {
	f := newFixture(t)
	f.node("n1", "dc1", true, []string{"replicated"})
	f.disk("root", apps.StorageReplicated, apps.DiskReady, "n1")
	f.deleting(f.vm("gone", "", "root"))
	f.schedule(t, "gone")
	if w := f.api.vmWrites(t, "gone"); len(w) != 0 {
		t.Fatalf("the scheduler wrote a deleted VM (node %q)", w[0].Status.Node)
	}
}

// TestDeletedVMStillHoldsItsDisksUntilItGoes: while a deleted VM's incarnation may run its QEMU
// writes its disks; another VM naming one is not bound.
func TestDeletedVMStillHoldsItsDisksUntilItGoes(t *testing.T) {
	f := newFixture(t)
	f.node("n1", "dc1", true, []string{"replicated"})
	f.node("n2", "dc1", true, []string{"replicated"})
	f.disk("root", apps.StorageReplicated, apps.DiskReady, "n1")
	f.deleting(f.vm("old", "n1", "root"))
	f.vm("new", "", "root")
	f.schedule(t, "new")
	vm, c := f.lastScheduled(t, "new")
	if c == nil || vm.Status.Node != "" || c.Message != "disk root is in use by VM old (bound to node n1)" {
		t.Fatalf("want the new VM refused naming the deleted one, got %+v %+v", c, vm)
	}
	// Once the deleted VM is gone (its node reported the exit, the finalizer went), the disk is free.
	f.inf.VMs.GetStore().Delete(&apps.VMInstance{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "old"}})
	f.schedule(t, "new")
	if vm, _ := f.lastScheduled(t, "new"); vm == nil || vm.Status.Node == "" {
		t.Fatalf("want the new VM bound once the deleted one is gone, got %+v", vm)
	}
}
