package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"

	apps "kumo.dev/kumo/pkg/apis/apps/v1alpha1"
	kumo "kumo.dev/kumo/pkg/apis/kumo/v1alpha1"
	"kumo.dev/kumo/pkg/client"
)

// deleteVMAndWait deletes a VM through the API and waits until it is gone: a deleted VM stays
// (finalizer kumo.dev/incarnation), holding its disks, until its incarnation has ended.
func deleteVMAndWait(t *testing.T, cl *client.Client, ns, name string, timeout time.Duration) {
	t.Helper()
	ctx := context.Background()
	if err := cl.Apps.Delete().Namespace(ns).Resource("vminstances").Name(name).Do(ctx).Error(); err != nil {
		t.Fatalf("delete VM %s: %v", name, err)
	}
	eventually(t, timeout, "VM "+name+" gone after delete", func() bool {
		return apierrors.IsNotFound(cl.Apps.Get().Namespace(ns).Resource("vminstances").Name(name).Do(ctx).Error())
	})
}

// TestDeletedVMKeepsItsDiskUntilItsQEMUIsGone: deleting a running VM takes effect only once its
// node has stopped the QEMU (ACPI, then quit/kill after the grace period). Until then the VM
// object stays and a new VM naming its disk is refused, so two QEMUs never write one disk.
func TestDeletedVMKeepsItsDiskUntilItsQEMUIsGone(t *testing.T) {
	c := startAllInOne(t)
	tenant := "del"
	kc := c.NewTenant(t, tenant)
	cl := c.Client(t, kc)
	ns := kumo.TenantNamespace(tenant)
	ctx := context.Background()
	if r := Run(kc, tinyVM("first", "root", ""), bins.kumo, "apply", "-f", "-"); r.Err != nil {
		t.Fatal(r)
	}
	waitVM(t, cl, ns, "first", "Running", bootTimeout, running)
	if n := len(qemuPIDsUnder(c.Dir)); n != 1 {
		t.Fatalf("%d QEMU processes for the VM, want 1", n)
	}

	// Delete without waiting, then at once try to give the disk to a second VM, again and again
	// while the first QEMU lives.
	c.MustKumo(t, kc, "delete", "vm", "first", "--wait=false")
	refused, deadline := 0, time.Now().Add(3*time.Minute)
	for len(qemuPIDsUnder(c.Dir)) > 0 {
		if time.Now().After(deadline) {
			t.Fatal("the deleted VM's QEMU still runs after 3 minutes")
		}
		r := Run(kc, tinyVM("second", "root", ""), bins.kumo, "apply", "-f", "-")
		alive := len(qemuPIDsUnder(c.Dir)) > 0
		if r.Err == nil {
			if alive {
				t.Fatalf("VM second was created on disk root while the deleted VM's QEMU still runs (pids %v)", qemuPIDsUnder(c.Dir))
			}
			// The QEMU ended between the checks; the VM object must be gone too.
			break
		}
		if !strings.Contains(r.Stderr, "in use by VM first") {
			t.Fatalf("creating VM second while the deleted VM runs: want refused naming VM first, got %s", r)
		}
		refused++
		vm := &apps.VMInstance{}
		err := cl.Apps.Get().Namespace(ns).Resource("vminstances").Name("first").Do(ctx).Into(vm)
		if err == nil && vm.DeletionTimestamp == nil {
			t.Fatalf("VM first has no deletionTimestamp after delete")
		}
		if apierrors.IsNotFound(err) && len(qemuPIDsUnder(c.Dir)) > 0 {
			t.Fatalf("VM first is gone while its QEMU still runs (pids %v)", qemuPIDsUnder(c.Dir))
		}
	}
	if refused == 0 {
		t.Fatal("the QEMU ended before a second VM could be tried: the window was not exercised")
	}
	t.Logf("VM second refused %d times while the deleted VM's QEMU ran", refused)

	// Once the QEMU is gone the VM object goes, and the disk serves a new VM.
	eventually(t, time.Minute, "VM first gone after its QEMU ended", func() bool {
		return apierrors.IsNotFound(cl.Apps.Get().Namespace(ns).Resource("vminstances").Name("first").Do(ctx).Error())
	})
	if r := Run(kc, tinyVM("second", "root", ""), bins.kumo, "apply", "-f", "-"); r.Err != nil {
		t.Fatalf("VM second on the disk of the deleted VM: %s", r)
	}
	vm := waitVM(t, cl, ns, "second", "Running", bootTimeout, running)
	if vm.Finalizers == nil || vm.Finalizers[0] != apps.IncarnationFinalizer {
		t.Errorf("new VM finalizers %v, want %s", vm.Finalizers, apps.IncarnationFinalizer)
	}
	// A VM that never ran is deleted at once (kumo delete waits for the finalizer).
	if r := Run(kc, "apiVersion: apps.cozystack.io/v1alpha1\nkind: VMInstance\nmetadata:\n  name: idle\nspec:\n  instanceType: s1.small\n  runStrategy: Halted\n", bins.kumo, "apply", "-f", "-"); r.Err != nil {
		t.Fatal(r)
	}
	start := time.Now()
	c.MustKumo(t, kc, "delete", "vm", "idle", "--timeout=30s")
	t.Logf("a VM that never ran deleted in %s", time.Since(start).Round(time.Millisecond))
}
