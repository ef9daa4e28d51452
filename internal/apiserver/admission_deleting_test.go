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

func TestNewVMGetsTheIncarnationFinalizer(t *testing.T) {
	vm := vmUsing("vm")
	vm.Finalizers = []string{"example.com/mine"}
	vmInstanceKind(nil).PrepareForCreate(vm)
	if !slices.Equal(vm.Finalizers, []string{"example.com/mine", apps.IncarnationFinalizer}) {
		t.Fatalf("finalizers %v, want the user's and %s", vm.Finalizers, apps.IncarnationFinalizer)
	}
	vmInstanceKind(nil).PrepareForCreate(vm)
	if len(vm.Finalizers) != 2 {
		t.Fatalf("finalizer added twice: %v", vm.Finalizers)
	}
}
