package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	apps "kumo.dev/kumo/pkg/apis/apps/v1alpha1"
	kumo "kumo.dev/kumo/pkg/apis/kumo/v1alpha1"
)

// Three clients create VMs with the tenant's token (two by POST, one by server-side apply) while the tenant is deleted. Whatever the
// race gives, once the deletion completes nothing of the old tenant is left in its namespace, and
// a new tenant of the same name lists nothing; the old token does not reach the new tenant.
func TestTenantDeletedWhileVMsAreCreatedLeavesNothingForTheNextOwner(t *testing.T) {
	c := needCluster(t)
	ctx := context.Background()
	admin := c.Admin(t)
	tenant := uniqueName("race")
	ns := kumo.TenantNamespace(tenant)
	old := c.Client(t, c.NewTenant(t, tenant))
	setQuota(t, admin, tenant, `{"vms":1000}`) // the race needs more VMs than the default quota
	deleted := false
	var raced int64
	for round := 0; round < 30 && !deleted; round++ {
		start := make(chan struct{})
		var stop atomic.Bool
		var created atomic.Int64
		var wg sync.WaitGroup
		for w := 0; w < 3; w++ {
			wg.Add(1)
			go func(w int) {
				defer wg.Done()
				<-start
				for i := 0; i < 100 && !stop.Load(); i++ {
					vm := newVM(fmt.Sprintf("r%d-w%d-%d", round, w, i))
					vm.Spec.CloudInit = "#cloud-config\npassword: secret-of-the-old-owner\n"
					req := old.Apps.Post().Namespace(ns).Resource("vminstances").Body(vm)
					if w == 2 { // kumo apply's way: a server-side apply that creates
						vm.APIVersion, vm.Kind = apps.SchemeGroupVersion.String(), "VMInstance"
						body, err := json.Marshal(vm)
						if err != nil {
							t.Error(err)
							return
						}
						req = old.Apps.Patch(types.ApplyPatchType).Namespace(ns).Resource("vminstances").Name(vm.Name).
							Param("fieldManager", "race").Body(body)
					}
					if err := req.Do(ctx).Error(); err != nil {
						if !apierrors.IsForbidden(err) && !apierrors.IsNotFound(err) && !apierrors.IsUnauthorized(err) {
							t.Errorf("creator %d: want a refusal (the tenant is going), got %v", w, err)
						}
						return
					}
					created.Add(1)
				}
			}(w)
		}
		close(start)
		err := admin.Kumo.Delete().Resource("tenants").Name(tenant).Do(ctx).Error()
		switch {
		case err == nil:
			deleted = true
		case apierrors.IsConflict(err):
			stop.Store(true) // a VM landed before the emptiness check: empty the tenant, try again
		default:
			t.Fatalf("delete tenant %s: %v", tenant, err)
		}
		wg.Wait()
		if deleted {
			raced = created.Load()
			break
		}
		if err := admin.Apps.Delete().Namespace(ns).Resource("vminstances").Do(ctx).Error(); err != nil {
			t.Fatalf("empty tenant %s for the next round: %v", tenant, err)
		}
	}
	if !deleted {
		t.Fatal("the tenant deletion never passed its emptiness check in 30 rounds")
	}
	t.Logf("%d VMs were created while the deletion ran", raced)
	eventually(t, 90*time.Second, "tenant and namespace gone", func() bool {
		_, err1 := admin.Core.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
		err2 := admin.Kumo.Get().Resource("tenants").Name(tenant).Do(ctx).Error()
		return apierrors.IsNotFound(err1) && apierrors.IsNotFound(err2)
	})
	var left apps.VMInstanceList
	if err := admin.Apps.Get().Namespace(ns).Resource("vminstances").Do(ctx).Into(&left); err != nil {
		t.Fatal(err)
	}
	if len(left.Items) > 0 {
		t.Fatalf("%d VMs of the deleted tenant remain in %s (of %d created during the deletion)", len(left.Items), ns, raced)
	}

	next := c.Client(t, c.NewTenant(t, tenant))
	var seen apps.VMInstanceList
	if err := next.Apps.Get().Namespace(ns).Resource("vminstances").Do(ctx).Into(&seen); err != nil {
		t.Fatal(err)
	}
	if len(seen.Items) > 0 {
		t.Errorf("the new tenant %s sees %d VMs of the old one", tenant, len(seen.Items))
	}
	if err := old.Apps.Get().Namespace(ns).Resource("vminstances").Do(ctx).Error(); !apierrors.IsUnauthorized(err) {
		t.Errorf("the old tenant's token against the new tenant: want 401, got %v", err)
	}
}
