package apiserver

import (
	"context"
	"slices"
	"strings"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/apiserver/pkg/admission"

	apps "kumo.dev/kumo/pkg/apis/apps/v1alpha1"
)

// A deleted VM stays (IncarnationFinalizer) while its incarnation may run; until it is gone its
// disks stay taken.

func deletedVMUsing(name string, disks ...string) *apps.VMInstance {
	vm := vmUsing(name, disks...)
	now := metav1.Now()
	vm.DeletionTimestamp, vm.Finalizers = &now, []string{apps.IncarnationFinalizer}
	vm.Status.Node, vm.Status.Incarnation, vm.Status.Phase = "n1", 2, apps.VMStopping
	return vm
}

func TestNewVMNamingTheDiskOfADeletedVMIsRefused(t *testing.T) {
	w := newWorld()
	w.disks.objs = []runtime.Object{disk("root")}
	w.vms.objs = []runtime.Object{deletedVMUsing("old", "root")}
	errs := w.lookups().exclusiveDisks(ctxIn(testNS), vmUsing("new", "root"), nil)
	oneError(t, errs, field.ErrorTypeForbidden, "spec.disks[0].name", "VMDisk root", "VM old")
}

func TestDiskOfADeletedVMIsNotDeletedUntilTheVMGoes(t *testing.T) {
	w := newWorld()
	w.disks.objs = []runtime.Object{disk("root")}
	w.vms.objs = []runtime.Object{deletedVMUsing("old", "root")}
	err := w.admission().Validate(context.Background(), attrs(admission.Delete, apps.Resource("vmdisks"), testNS, "root", "", nil, disk("root"), tenantUser), nil)
	if !apierrors.IsConflict(err) || !strings.Contains(err.Error(), "VM old") {
		t.Fatalf("deleting the disk of a deleted VM whose incarnation may run: want 409 naming it, got %v", err)
	}
}

// TestNodeReportsTheExitOfADeletedVM: the exit report is what lets a deleted VM go.
func TestNodeReportsTheExitOfADeletedVM(t *testing.T) {
	a := newWorld().admission()
	old := deletedVMUsing("vm", "root")
	exited := old.DeepCopy()
	exited.Status.Phase = apps.VMStopped
	exited.Status.LastExit = &apps.IncarnationExit{Incarnation: 2, Node: "n1", Reason: apps.ExitStopped}
	if err := a.Validate(context.Background(), attrs(admission.Update, apps.Resource("vminstances"), testNS, "vm", "status", exited, old, node1), nil); err != nil {
		t.Fatalf("n1 reporting the exit of its deleted VM: %v", err)
	}
}

// TestIncarnationFinalizerFollowsTheBoundIncarnation: the API server keeps the finalizer on a VM
// exactly while an incarnation is bound and has not ended, in the same write that binds, reports
// the end or releases; users cannot add or remove it.
func TestIncarnationFinalizerFollowsTheBoundIncarnation(t *testing.T) {
	k := vmInstanceKind(nil)
	holds := func(vm *apps.VMInstance) bool { return slices.Contains(vm.Finalizers, apps.IncarnationFinalizer) }

	vm := vmUsing("vm", "root")
	vm.Finalizers = []string{"example.com/mine", apps.IncarnationFinalizer}
	k.PrepareForCreate(vm)
	if !slices.Equal(vm.Finalizers, []string{"example.com/mine"}) {
		t.Fatalf("a new VM (not bound) has finalizers %v, want only the user's", vm.Finalizers)
	}
	bound := vm.DeepCopy()
	bound.Status.Node, bound.Status.Incarnation, bound.Status.Phase = "n1", 1, apps.VMScheduled
	k.PrepareForStatusUpdate(bound, vm)
	if !holds(bound) {
		t.Fatalf("binding did not add the finalizer: %v", bound.Finalizers)
	}
	again := bound.DeepCopy()
	k.PrepareForStatusUpdate(again, bound)
	if len(again.Finalizers) != 2 {
		t.Fatalf("finalizer added twice: %v", again.Finalizers)
	}
	// A user's update cannot take it away while the incarnation runs, nor add it to an unbound VM.
	stripped := bound.DeepCopy()
	stripped.Finalizers = nil
	k.PrepareForUpdate(stripped, bound)
	if !holds(stripped) {
		t.Fatalf("a user's update removed the finalizer of a running VM: %v", stripped.Finalizers)
	}
	added := vm.DeepCopy()
	added.Finalizers = append(added.Finalizers, apps.IncarnationFinalizer)
	k.PrepareForUpdate(added, vm)
	if holds(added) {
		t.Fatalf("a user's update added the finalizer to an unbound VM: %v", added.Finalizers)
	}
	// A status write that is not the end keeps it; the node's exit report removes it.
	running := bound.DeepCopy()
	running.Status.Phase = apps.VMRunning
	k.PrepareForStatusUpdate(running, bound)
	if !holds(running) {
		t.Fatal("a status write of a running incarnation removed the finalizer")
	}
	exited := running.DeepCopy()
	exited.Status.Phase = apps.VMStopped
	exited.Status.LastExit = &apps.IncarnationExit{Incarnation: 1, Node: "n1", Reason: apps.ExitStopped}
	k.PrepareForStatusUpdate(exited, running)
	if !slices.Equal(exited.Finalizers, []string{"example.com/mine"}) {
		t.Fatalf("the exit report left finalizers %v, want only the user's", exited.Finalizers)
	}
}
