package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"

	apps "kumo.dev/kumo/pkg/apis/apps/v1alpha1"
	kumo "kumo.dev/kumo/pkg/apis/kumo/v1alpha1"
)

// causeAt returns the message of the 422's cause at field, or "" when there is none.
func causeAt(err error, field string) string {
	s, ok := err.(apierrors.APIStatus)
	if !ok || s.Status().Details == nil {
		return ""
	}
	for _, c := range s.Status().Details.Causes {
		if c.Field == field {
			return c.Message
		}
	}
	return ""
}

func TestSecondVMOnALocalDiskIsRefusedNamingTheFirst(t *testing.T) {
	c := needCluster(t)
	ctx := context.Background()
	tenant := uniqueName("excl")
	kc := c.NewTenant(t, tenant)
	cl := c.Client(t, kc)
	ns := kumo.TenantNamespace(tenant)
	iso := newDisk("installer", "1Gi", apps.StorageLocal)
	iso.Spec.Optical = true
	for _, d := range []*apps.VMDisk{newDisk("root", "1Gi", apps.StorageLocal), newDisk("root2", "1Gi", apps.StorageLocal), iso} {
		if err := cl.Apps.Post().Namespace(ns).Resource("vmdisks").Body(d).Do(ctx).Error(); err != nil {
			t.Fatal(err)
		}
	}
	if err := cl.Apps.Post().Namespace(ns).Resource("vminstances").Body(newVM("first", "root", "installer")).Do(ctx).Error(); err != nil {
		t.Fatal(err)
	}
	err := cl.Apps.Post().Namespace(ns).Resource("vminstances").Body(newVM("second", "root2", "root")).Do(ctx).Error()
	if !apierrors.IsInvalid(err) || statusCode(err) != 422 {
		t.Fatalf("second VM on disk root: want 422, got %v", err)
	}
	if msg := causeAt(err, "spec.disks[1].name"); !strings.Contains(msg, "in use by VM first") {
		t.Errorf("the refusal should name the VM holding the disk at spec.disks[1].name: %v", err)
	}
	if err := cl.Apps.Get().Namespace(ns).Resource("vminstances").Name("second").Do(ctx).Error(); !apierrors.IsNotFound(err) {
		t.Errorf("the refused VM was stored: %v", err)
	}
	// An optical disk (an installer ISO) is shared.
	if err := cl.Apps.Post().Namespace(ns).Resource("vminstances").Body(newVM("second", "root2", "installer")).Do(ctx).Error(); err != nil {
		t.Fatalf("a second VM sharing the optical disk: %v", err)
	}
	// Adding the disk to an existing VM is refused the same way, through kumo apply too.
	m := "apiVersion: apps.cozystack.io/v1alpha1\nkind: VMInstance\nmetadata:\n  name: second\nspec:\n  instanceType: u1.medium\n  instanceProfile: ubuntu\n  disks:\n  - root2\n  - installer\n  - root\n"
	if r := Run(kc, m, bins.kumo, "apply", "--force-conflicts", "-f", "-"); r.Err == nil || !strings.Contains(r.Stderr, "in use by VM first") {
		t.Errorf("kumo apply adding disk root to VM second: %s", r)
	}
	// Once the first VM is gone the disk is free.
	deleteVMAndWait(t, cl, ns, "first", time.Minute)
	if err := cl.Apps.Post().Namespace(ns).Resource("vminstances").Body(newVM("third", "root")).Do(ctx).Error(); err != nil {
		t.Fatalf("the disk of a deleted VM: %v", err)
	}
}

func TestDiskNamedByAStoppedVMCannotBeDeleted(t *testing.T) {
	c := needCluster(t)
	ctx := context.Background()
	tenant := uniqueName("keep")
	kc := c.NewTenant(t, tenant)
	cl := c.Client(t, kc)
	ns := kumo.TenantNamespace(tenant)
	if err := cl.Apps.Post().Namespace(ns).Resource("vmdisks").Body(newDisk("data", "1Gi", apps.StorageReplicated)).Do(ctx).Error(); err != nil {
		t.Fatal(err)
	}
	vm := newVM("db", "data")
	vm.Spec.RunStrategy = apps.RunHalted
	if err := cl.Apps.Post().Namespace(ns).Resource("vminstances").Body(vm).Do(ctx).Error(); err != nil {
		t.Fatal(err)
	}
	waitVM(t, cl, ns, "db", "Stopped", 30*time.Second, func(vm *apps.VMInstance) bool { return vm.Status.Phase == apps.VMStopped })
	err := cl.Apps.Delete().Namespace(ns).Resource("vmdisks").Name("data").Do(ctx).Error()
	if !apierrors.IsConflict(err) || statusCode(err) != 409 || !strings.Contains(err.Error(), "in use by VM db") {
		t.Fatalf("deleting the disk of a stopped VM: want 409 naming the VM, got %v", err)
	}
	if r := c.Kumo(kc, "delete", "vmdisk", "data"); r.Err == nil || !strings.Contains(r.Stderr, "in use by VM db") {
		t.Errorf("kumo delete vmdisk of a stopped VM: %s", r)
	}
	// Deleting every disk of the namespace at once (deletecollection) keeps it too.
	if err := cl.Apps.Delete().Namespace(ns).Resource("vmdisks").Do(ctx).Error(); !apierrors.IsConflict(err) {
		t.Errorf("deletecollection of disks including one a VM names: want 409, got %v", err)
	}
	if err := cl.Apps.Get().Namespace(ns).Resource("vmdisks").Name("data").Do(ctx).Error(); err != nil {
		t.Fatalf("the disk is gone after a refused delete: %v", err)
	}
	deleteVMAndWait(t, cl, ns, "db", time.Minute)
	if err := cl.Apps.Delete().Namespace(ns).Resource("vmdisks").Name("data").Do(ctx).Error(); err != nil {
		t.Fatalf("deleting the disk once its VM is gone: %v", err)
	}
}

func TestCloneOfAnAbsentDiskIsRefusedEvenIfANamesakeExists(t *testing.T) {
	c := needCluster(t)
	ctx := context.Background()
	tenant := uniqueName("clone")
	cl := c.Client(t, c.NewTenant(t, tenant))
	ns := kumo.TenantNamespace(tenant)
	if err := cl.Apps.Post().Namespace(ns).Resource("vmdisks").Body(newDisk("db-bak", "1Gi", apps.StorageLocal)).Do(ctx).Error(); err != nil {
		t.Fatal(err)
	}
	clone := newDisk("copy", "1Gi", apps.StorageLocal)
	clone.Spec.Source = apps.VMDiskSource{Disk: &apps.DiskSource{Name: "db"}}
	err := cl.Apps.Post().Namespace(ns).Resource("vmdisks").Body(clone).Do(ctx).Error()
	if !apierrors.IsInvalid(err) || !strings.Contains(causeAt(err, "spec.source.disk.name"), "no VMDisk db") {
		t.Fatalf("clone of absent disk db: want 422 at spec.source.disk.name, got %v", err)
	}
	// A source that exists but is not ready yet is accepted: the clone waits for it.
	clone.Spec.Source.Disk.Name = "db-bak"
	if err := cl.Apps.Post().Namespace(ns).Resource("vmdisks").Body(clone).Do(ctx).Error(); err != nil {
		t.Fatalf("clone of a pending disk: %v", err)
	}
	// And the source cannot be deleted under the clone it feeds.
	if err := cl.Apps.Delete().Namespace(ns).Resource("vmdisks").Name("db-bak").Do(ctx).Error(); !apierrors.IsConflict(err) || !strings.Contains(err.Error(), "VMDisk copy") {
		t.Fatalf("deleting the source of a pending clone: want 409 naming the clone, got %v", err)
	}
}

func TestDiskSizeMustBeWholeSectors(t *testing.T) {
	c := needCluster(t)
	ctx := context.Background()
	tenant := uniqueName("size")
	cl := c.Client(t, c.NewTenant(t, tenant))
	ns := kumo.TenantNamespace(tenant)
	for _, size := range []string{"1m", "0.5", "1000", "1500000"} {
		err := cl.Apps.Post().Namespace(ns).Resource("vmdisks").Body(newDisk("odd", size, apps.StorageLocal)).Do(ctx).Error()
		if !apierrors.IsInvalid(err) || causeAt(err, "spec.storage") == "" {
			t.Errorf("storage %s: want 422 at spec.storage, got %v", size, err)
		}
	}
}
