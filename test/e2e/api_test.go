package e2e

import (
	"context"
	"encoding/json"
	"net/http"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/util/retry"

	apps "kumo.dev/kumo/pkg/apis/apps/v1alpha1"
	kumo "kumo.dev/kumo/pkg/apis/kumo/v1alpha1"
	"kumo.dev/kumo/pkg/client"
)

func statusCode(err error) int32 {
	if s, ok := err.(apierrors.APIStatus); ok {
		return s.Status().Code
	}
	return 0
}

func TestCreateReturns201ThenAlreadyExists409AndStaleUpdate409(t *testing.T) {
	c := needCluster(t)
	ctx := context.Background()
	tenant := uniqueName("crud")
	cl := c.Client(t, c.NewTenant(t, tenant))
	ns := kumo.TenantNamespace(tenant)

	var code int
	res := cl.Apps.Post().Namespace(ns).Resource("vminstances").Body(newVM("vm1")).Do(ctx).StatusCode(&code)
	if res.Error() != nil || code != http.StatusCreated {
		t.Fatalf("create: code %d err %v", code, res.Error())
	}
	created := &apps.VMInstance{}
	if err := res.Into(created); err != nil {
		t.Fatal(err)
	}
	if created.Spec.RunStrategy != apps.RunAlways || created.Spec.ExternalMethod != apps.PortList ||
		len(created.Spec.ExternalPorts) != 1 || created.Spec.ExternalPorts[0] != 22 || created.Status.Phase != apps.VMPending {
		t.Errorf("defaults not applied: spec %+v status %+v", created.Spec, created.Status)
	}
	err := cl.Apps.Post().Namespace(ns).Resource("vminstances").Body(newVM("vm1")).Do(ctx).Error()
	if !apierrors.IsAlreadyExists(err) || statusCode(err) != 409 {
		t.Fatalf("second create: want 409 AlreadyExists, got %v", err)
	}

	stale := created.DeepCopy()
	// Controllers write the VM's status too: re-read before each update, as any client must.
	putVM(t, cl, ns, "vm1", "", func(vm *apps.VMInstance) { vm.Spec.InstanceType = "u1.large" })
	stale.Spec.InstanceType = "s1.small"
	err = cl.Apps.Put().Namespace(ns).Resource("vminstances").Name("vm1").Body(stale).Do(ctx).Error()
	if !apierrors.IsConflict(err) {
		t.Fatalf("update with stale resourceVersion: want 409 Conflict, got %v", err)
	}
	got := &apps.VMInstance{}
	if err := cl.Apps.Get().Namespace(ns).Resource("vminstances").Name("vm1").Do(ctx).Into(got); err != nil {
		t.Fatal(err)
	}
	if got.Spec.InstanceType != "u1.large" || got.Generation != 2 {
		t.Errorf("stored VM: type %q generation %d, want u1.large and 2", got.Spec.InstanceType, got.Generation)
	}
}

func TestInvalidVMIsRefusedWith422NamingEveryField(t *testing.T) {
	c := needCluster(t)
	ctx := context.Background()
	tenant := uniqueName("inval")
	cl := c.Client(t, c.NewTenant(t, tenant))
	ns := kumo.TenantNamespace(tenant)

	vm := newVM("bad", "d1", "d1")
	vm.Spec.InstanceType = "u9.huge"
	vm.Spec.InstanceProfile = "beos"
	vm.Spec.ExternalPorts = []int32{22, 22, 70000}
	vm.Spec.ExternalMethod = "Sometimes"
	vm.Spec.SSHKeys = []string{"ssh-rsa not-a-key"}
	vm.Spec.CloudInit = "echo hello"
	err := cl.Apps.Post().Namespace(ns).Resource("vminstances").Body(vm).Do(ctx).Error()
	if !apierrors.IsInvalid(err) || statusCode(err) != 422 {
		t.Fatalf("want 422 Invalid, got %v", err)
	}
	var fields []string
	for _, cause := range err.(apierrors.APIStatus).Status().Details.Causes {
		fields = append(fields, cause.Field)
		if cause.Message == "" {
			t.Errorf("cause for %s has no message", cause.Field)
		}
	}
	sort.Strings(fields)
	want := []string{"spec.cloudInit", "spec.disks[1].name", "spec.externalMethod", "spec.externalPorts[1]", "spec.externalPorts[2]",
		"spec.instanceProfile", "spec.instanceType", "spec.sshKeys[0]"}
	if strings.Join(fields, ",") != strings.Join(want, ",") {
		t.Errorf("fields reported:\n got  %v\n want %v", fields, want)
	}
	if err := cl.Apps.Get().Namespace(ns).Resource("vminstances").Name("bad").Do(ctx).Error(); !apierrors.IsNotFound(err) {
		t.Errorf("invalid VM was stored: %v", err)
	}
}

func TestDiskMayOnlyGrowAndKeepsItsStorageClass(t *testing.T) {
	c := needCluster(t)
	ctx := context.Background()
	tenant := uniqueName("disk")
	cl := c.Client(t, c.NewTenant(t, tenant))
	ns := kumo.TenantNamespace(tenant)
	d := &apps.VMDisk{}
	if err := cl.Apps.Post().Namespace(ns).Resource("vmdisks").Body(newDisk("data", "5Gi", "")).Do(ctx).Into(d); err != nil {
		t.Fatal(err)
	}
	if d.Spec.StorageClass != apps.StorageReplicated {
		t.Errorf("default storage class %q, want replicated", d.Spec.StorageClass)
	}
	// The scheduler places a new disk (a status write) at any moment: read-modify-write retries
	// on a resourceVersion conflict, as any client must.
	put := func(mut func(*apps.VMDisk)) error {
		return retry.RetryOnConflict(retry.DefaultRetry, func() error {
			cur := &apps.VMDisk{}
			if err := cl.Apps.Get().Namespace(ns).Resource("vmdisks").Name("data").Do(ctx).Into(cur); err != nil {
				t.Fatal(err)
			}
			mut(cur)
			return cl.Apps.Put().Namespace(ns).Resource("vmdisks").Name("data").Body(cur).Do(ctx).Error()
		})
	}
	if err := put(func(d *apps.VMDisk) { q := resource.MustParse("10Gi"); d.Spec.Storage = &q }); err != nil {
		t.Fatalf("grow: %v", err)
	}
	err := put(func(d *apps.VMDisk) { q := resource.MustParse("2Gi"); d.Spec.Storage = &q })
	if !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), "10Gi") || !strings.Contains(err.Error(), "2Gi") {
		t.Errorf("shrink: want 422 naming both sizes, got %v", err)
	}
	err = put(func(d *apps.VMDisk) { d.Spec.StorageClass = apps.StorageLocal })
	if !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), "spec.storageClass") {
		t.Errorf("change storage class: want 422 on spec.storageClass, got %v", err)
	}
	got := &apps.VMDisk{}
	if err := cl.Apps.Get().Namespace(ns).Resource("vmdisks").Name("data").Do(ctx).Into(got); err != nil {
		t.Fatal(err)
	}
	if got.Spec.Storage.String() != "10Gi" || got.Spec.StorageClass != apps.StorageReplicated {
		t.Errorf("stored disk changed by refused updates: %s %s", got.Spec.Storage, got.Spec.StorageClass)
	}

	two := newDisk("two", "1Gi", apps.StorageLocal)
	two.Spec.Source.HTTP = &apps.HTTPSource{URL: "http://127.0.0.1/x.qcow2"}
	err = cl.Apps.Post().Namespace(ns).Resource("vmdisks").Body(two).Do(ctx).Error()
	if !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), "spec.source") {
		t.Errorf("two sources: want 422 on spec.source, got %v", err)
	}
}

func TestTenantUsersReachOnlyTheirOwnNamespace(t *testing.T) {
	c := needCluster(t)
	ctx := context.Background()
	a, b := uniqueName("ta"), uniqueName("tb")
	ca := c.Client(t, c.NewTenant(t, a))
	cb := c.Client(t, c.NewTenant(t, b))
	nsA := kumo.TenantNamespace(a)
	if err := ca.Apps.Post().Namespace(nsA).Resource("vminstances").Body(newVM("secret")).Do(ctx).Error(); err != nil {
		t.Fatal(err)
	}
	checks := map[string]rest.Result{
		"get A's VM":           cb.Apps.Get().Namespace(nsA).Resource("vminstances").Name("secret").Do(ctx),
		"list A's namespace":   cb.Apps.Get().Namespace(nsA).Resource("vminstances").Do(ctx),
		"list all namespaces":  cb.Apps.Get().Resource("vminstances").Do(ctx),
		"create in A":          cb.Apps.Post().Namespace(nsA).Resource("vminstances").Body(newVM("intruder")).Do(ctx),
		"delete A's VM":        cb.Apps.Delete().Namespace(nsA).Resource("vminstances").Name("secret").Do(ctx),
		"list tenants":         cb.Kumo.Get().Resource("tenants").Do(ctx),
		"get tenant A":         cb.Kumo.Get().Resource("tenants").Name(a).Do(ctx),
		"create instance type": cb.Kumo.Post().Resource("instancetypes").Body(&kumo.InstanceType{ObjectMeta: metav1.ObjectMeta{Name: "x1.cheap"}}).Do(ctx),
	}
	for what, res := range checks {
		if err := res.Error(); !apierrors.IsForbidden(err) {
			t.Errorf("%s: want 403 Forbidden, got %v", what, err)
		}
	}
	if _, err := cb.Apps.Get().Resource("vminstances").Param("watch", "true").Watch(ctx); !apierrors.IsForbidden(err) {
		t.Errorf("watch across namespaces: want 403, got %v", err)
	}
	if err := cb.Kumo.Get().Resource("instancetypes").Do(ctx).Error(); err != nil {
		t.Errorf("tenant cannot read the instance type catalogue: %v", err)
	}
	if err := cb.Kumo.Get().Resource("tenants").Name(b).Do(ctx).Error(); err != nil {
		t.Errorf("tenant cannot read its own Tenant: %v", err)
	}
	if err := ca.Apps.Get().Namespace(nsA).Resource("vminstances").Name("secret").Do(ctx).Error(); err != nil {
		t.Errorf("VM of A touched by B's attempts: %v", err)
	}
}

func TestRequestsWithoutValidCredentialsGet401(t *testing.T) {
	c := needCluster(t)
	ctx := context.Background()
	tenant := uniqueName("auth")
	kc := c.NewTenant(t, tenant)
	cfg, err := c.restConfig(kc)
	if err != nil {
		t.Fatal(err)
	}
	token := cfg.BearerToken
	for name, tok := range map[string]string{
		"no token":       "",
		"tampered token": token[:len(token)-4] + "AAAA",
		"foreign token":  "eyJhbGciOiJSUzI1NiJ9.e30.sig",
	} {
		cc := rest.CopyConfig(cfg)
		cc.BearerToken = tok
		cl := c.clientFor(t, cc)
		if err := cl.Apps.Get().Namespace(kumo.TenantNamespace(tenant)).Resource("vminstances").Do(ctx).Error(); !apierrors.IsUnauthorized(err) {
			t.Errorf("%s: want 401, got %v", name, err)
		}
	}
	// A deleted tenant's tokens stop working.
	admin := c.Admin(t)
	if err := admin.Kumo.Delete().Resource("tenants").Name(tenant).Do(ctx).Error(); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "tenant token rejected after tenant deletion", func() bool {
		err := c.Client(t, kc).Apps.Get().Namespace(kumo.TenantNamespace(tenant)).Resource("vminstances").Do(ctx).Error()
		return apierrors.IsUnauthorized(err)
	})
}

func TestWatchSeesAddedModifiedDeleted(t *testing.T) {
	c := needCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tenant := uniqueName("watch")
	cl := c.Client(t, c.NewTenant(t, tenant))
	ns := kumo.TenantNamespace(tenant)
	w, err := cl.Apps.Get().Namespace(ns).Resource("vminstances").Param("watch", "true").Watch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	if err := cl.Apps.Post().Namespace(ns).Resource("vminstances").Body(newVM("w1")).Do(ctx).Error(); err != nil {
		t.Fatal(err)
	}
	putVM(t, cl, ns, "w1", "", func(vm *apps.VMInstance) { vm.Spec.InstanceType = "s1.small" })
	if err := cl.Apps.Delete().Namespace(ns).Resource("vminstances").Name("w1").Do(ctx).Error(); err != nil {
		t.Fatal(err)
	}
	// Controllers may add MODIFIED events of their own (status); the user's change must be among them.
	var seen []watch.EventType
	sawChange := false
	for len(seen) == 0 || seen[len(seen)-1] != watch.Deleted {
		select {
		case ev, ok := <-w.ResultChan():
			if !ok {
				t.Fatalf("watch closed after %v", seen)
			}
			seen = append(seen, ev.Type)
			if vm, ok := ev.Object.(*apps.VMInstance); ok && ev.Type == watch.Modified && vm.Spec.InstanceType == "s1.small" {
				sawChange = true
			}
		case <-ctx.Done():
			t.Fatalf("watch saw only %v", seen)
		}
	}
	if seen[0] != watch.Added || !sawChange {
		t.Errorf("events %v (saw the spec change: %v), want ADDED, MODIFIED..., DELETED", seen, sawChange)
	}
}

func TestServerSideApplyConflictsAndDryRun(t *testing.T) {
	c := needCluster(t)
	ctx := context.Background()
	tenant := uniqueName("ssa")
	cl := c.Client(t, c.NewTenant(t, tenant))
	ns := kumo.TenantNamespace(tenant)
	apply := func(manager, instanceType string, force bool) error {
		body := `{"apiVersion":"apps.cozystack.io/v1alpha1","kind":"VMInstance","metadata":{"name":"ssa"},"spec":{"instanceType":"` + instanceType + `","disks":["sys"]}}`
		req := cl.Apps.Patch(types.ApplyPatchType).Namespace(ns).Resource("vminstances").Name("ssa").Param("fieldManager", manager).Body([]byte(body))
		if force {
			req = req.Param("force", "true")
		}
		return req.Do(ctx).Error()
	}
	if err := apply("alice", "u1.medium", false); err != nil {
		t.Fatalf("first apply: %v", err)
	}
	if err := apply("bob", "u1.large", false); !apierrors.IsConflict(err) || !strings.Contains(err.Error(), "alice") {
		t.Errorf("conflicting apply by another manager: want 409 naming alice, got %v", err)
	}
	if err := apply("bob", "u1.large", true); err != nil {
		t.Errorf("forced apply: %v", err)
	}
	// Dry-run creates nothing.
	var code int
	res := cl.Apps.Post().Namespace(ns).Resource("vminstances").Param("dryRun", "All").Body(newVM("ghost")).Do(ctx).StatusCode(&code)
	if res.Error() != nil || code != http.StatusCreated {
		t.Fatalf("dry-run create: %d %v", code, res.Error())
	}
	if err := cl.Apps.Get().Namespace(ns).Resource("vminstances").Name("ghost").Do(ctx).Error(); !apierrors.IsNotFound(err) {
		t.Errorf("dry-run stored the VM: %v", err)
	}
}

func TestTableOutputHasVMColumns(t *testing.T) {
	c := needCluster(t)
	ctx := context.Background()
	tenant := uniqueName("table")
	cl := c.Client(t, c.NewTenant(t, tenant))
	ns := kumo.TenantNamespace(tenant)
	if err := cl.Apps.Post().Namespace(ns).Resource("vminstances").Body(newVM("t1")).Do(ctx).Error(); err != nil {
		t.Fatal(err)
	}
	raw, err := cl.Apps.Get().Namespace(ns).Resource("vminstances").SetHeader("Accept", "application/json;as=Table;v=v1;g=meta.k8s.io").DoRaw(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var table metav1.Table
	if err := json.Unmarshal(raw, &table); err != nil {
		t.Fatal(err)
	}
	var cols []string
	for _, col := range table.ColumnDefinitions {
		if col.Priority == 0 {
			cols = append(cols, col.Name)
		}
	}
	if got := strings.Join(cols, " "); got != "Name Phase Type Node DC IP Age" {
		t.Errorf("columns %q", got)
	}
	if len(table.Rows) != 1 || table.Rows[0].Cells[0] != "t1" || table.Rows[0].Cells[1] != "Pending" || table.Rows[0].Cells[2] != "u1.medium" {
		t.Errorf("rows %+v", table.Rows)
	}
}

func TestOpenAPIPublishesTheKinds(t *testing.T) {
	c := needCluster(t)
	ctx := context.Background()
	cl := c.Admin(t)
	v2, err := cl.Apps.Get().AbsPath("/openapi/v2").DoRaw(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, def := range []string{"io.cozystack.apps.v1alpha1.VMInstance", "io.cozystack.apps.v1alpha1.VMDisk", "dev.kumo.v1alpha1.InstanceType", "dev.kumo.v1alpha1.Tenant"} {
		if !strings.Contains(string(v2), `"`+def+`"`) {
			t.Errorf("OpenAPI v2 lacks %s", def)
		}
	}
	v3, err := cl.Apps.Get().AbsPath("/openapi/v3/apis/apps.cozystack.io/v1alpha1").DoRaw(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(v3), "externalPorts") || !strings.Contains(string(v3), "x-kubernetes-group-version-kind") {
		t.Errorf("OpenAPI v3 for apps.cozystack.io lacks the VMInstance schema")
	}
}

func TestStatusChangesOnlyThroughTheStatusSubresource(t *testing.T) {
	c := needCluster(t)
	ctx := context.Background()
	admin := c.Admin(t)
	tenant := uniqueName("status")
	c.NewTenant(t, tenant)
	ns := kumo.TenantNamespace(tenant)
	vm := &apps.VMInstance{}
	if err := admin.Apps.Post().Namespace(ns).Resource("vminstances").Body(newVM("s1")).Do(ctx).Into(vm); err != nil {
		t.Fatal(err)
	}
	var before apps.VMPhase
	vm = putVM(t, admin, ns, "s1", "", func(vm *apps.VMInstance) { before = vm.Status.Phase; vm.Status.Phase = apps.VMRunning })
	if vm.Status.Phase != before {
		t.Errorf("main resource update changed status from %s to %s", before, vm.Status.Phase)
	}
	vm = putVM(t, admin, ns, "s1", "status", func(vm *apps.VMInstance) {
		vm.Status.Phase, vm.Status.Node, vm.Spec.InstanceType = apps.VMRunning, "n1", "s1.small"
	})
	if vm.Status.Phase != apps.VMRunning || vm.Status.Node != "n1" || vm.Spec.InstanceType != "u1.medium" {
		t.Errorf("status update: phase %s node %s type %s", vm.Status.Phase, vm.Status.Node, vm.Spec.InstanceType)
	}
}

func TestRunningBooleanDrivesRunStrategy(t *testing.T) {
	c := needCluster(t)
	ctx := context.Background()
	tenant := uniqueName("run")
	cl := c.Client(t, c.NewTenant(t, tenant))
	ns := kumo.TenantNamespace(tenant)
	apply := func(running string) *apps.VMInstance {
		body := `{"apiVersion":"apps.cozystack.io/v1alpha1","kind":"VMInstance","metadata":{"name":"r"},"spec":{"instanceType":"u1.medium","running":` + running + `}}`
		out := &apps.VMInstance{}
		if err := cl.Apps.Patch(types.ApplyPatchType).Namespace(ns).Resource("vminstances").Name("r").Param("fieldManager", "t").Body([]byte(body)).Do(ctx).Into(out); err != nil {
			t.Fatalf("apply running=%s: %v", running, err)
		}
		return out
	}
	if vm := apply("false"); vm.Spec.RunStrategy != apps.RunHalted {
		t.Errorf("running=false gave runStrategy %s", vm.Spec.RunStrategy)
	}
	if vm := apply("true"); vm.Spec.RunStrategy != apps.RunAlways {
		t.Errorf("running=true gave runStrategy %s", vm.Spec.RunStrategy)
	}
	// An explicitly empty port list stays empty: nothing is exposed, not SSH by default.
	closed := newVM("closed")
	closed.Spec.External, closed.Spec.ExternalPorts = true, []int32{}
	got := &apps.VMInstance{}
	if err := cl.Apps.Post().Namespace(ns).Resource("vminstances").Body(closed).Do(ctx).Error(); err != nil {
		t.Fatal(err)
	}
	if err := cl.Apps.Get().Namespace(ns).Resource("vminstances").Name("closed").Do(ctx).Into(got); err != nil {
		t.Fatal(err)
	}
	if got.Spec.ExternalPorts == nil || len(got.Spec.ExternalPorts) != 0 {
		t.Errorf("externalPorts: [] stored as %v", got.Spec.ExternalPorts)
	}
	both := newVM("both")
	f := false
	both.Spec.Running, both.Spec.RunStrategy = &f, apps.RunAlways
	if err := cl.Apps.Post().Namespace(ns).Resource("vminstances").Body(both).Do(ctx).Error(); !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), "spec.running") {
		t.Errorf("running=false with runStrategy Always: want 422 on spec.running, got %v", err)
	}
}

func TestTenantDeletionIsRefusedWhileItHoldsVMsOrDisks(t *testing.T) {
	c := needCluster(t)
	ctx := context.Background()
	admin := c.Admin(t)
	tenant := uniqueName("del")
	cl := c.Client(t, c.NewTenant(t, tenant))
	ns := kumo.TenantNamespace(tenant)
	if err := cl.Apps.Post().Namespace(ns).Resource("vminstances").Body(newVM("v")).Do(ctx).Error(); err != nil {
		t.Fatal(err)
	}
	if err := cl.Apps.Post().Namespace(ns).Resource("vmdisks").Body(newDisk("d", "1Gi", apps.StorageLocal)).Do(ctx).Error(); err != nil {
		t.Fatal(err)
	}
	err := admin.Kumo.Delete().Resource("tenants").Name(tenant).Do(ctx).Error()
	if !apierrors.IsConflict(err) || !strings.Contains(err.Error(), "1 VMInstance and 1 VMDisk") {
		t.Fatalf("delete tenant holding a VM and a disk: want 409 naming them, got %v", err)
	}
	if err := admin.Core.CoreV1().Namespaces().Delete(ctx, ns, metav1.DeleteOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("deleting a live tenant's namespace: want 403, got %v", err)
	}
	deleteVMAndWait(t, cl, ns, "v", time.Minute)
	if err := cl.Apps.Delete().Namespace(ns).Resource("vmdisks").Name("d").Do(ctx).Error(); err != nil {
		t.Fatal(err)
	}
	if err := admin.Kumo.Delete().Resource("tenants").Name(tenant).Do(ctx).Error(); err != nil {
		t.Fatalf("delete empty tenant: %v", err)
	}
	eventually(t, 20*time.Second, "tenant and namespace gone", func() bool {
		_, err1 := admin.Core.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
		err2 := admin.Kumo.Get().Resource("tenants").Name(tenant).Do(ctx).Error()
		return apierrors.IsNotFound(err1) && apierrors.IsNotFound(err2)
	})
	err = admin.Apps.Post().Namespace(ns).Resource("vminstances").Body(newVM("late")).Do(ctx).Error()
	if !apierrors.IsNotFound(err) || !strings.Contains(err.Error(), "kumo tenant create") {
		t.Errorf("create in a deleted tenant's namespace: want 404 with a hint, got %v", err)
	}
}

func TestObjectsSurviveAServerRestart(t *testing.T) {
	needCluster(t)
	c, err := StartCluster(t.TempDir(), "server")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Stop()
	ctx := context.Background()
	tenant := "persist"
	kc := c.NewTenant(t, tenant)
	ns := kumo.TenantNamespace(tenant)
	if err := c.Client(t, kc).Apps.Post().Namespace(ns).Resource("vmdisks").Body(newDisk("keep", "7Gi", apps.StorageLocal)).Do(ctx).Error(); err != nil {
		t.Fatal(err)
	}
	c.Stop()
	if err := c.Start(); err != nil {
		t.Fatalf("restart: %v", err)
	}
	d := &apps.VMDisk{}
	if err := c.Client(t, kc).Apps.Get().Namespace(ns).Resource("vmdisks").Name("keep").Do(ctx).Into(d); err != nil {
		t.Fatalf("disk after restart (with the tenant token issued before it): %v", err)
	}
	if d.Spec.Storage.String() != "7Gi" || d.Spec.StorageClass != apps.StorageLocal {
		t.Errorf("disk after restart: %s %s", d.Spec.Storage, d.Spec.StorageClass)
	}
	types := &kumo.InstanceTypeList{}
	if err := c.Admin(t).Kumo.Get().Resource("instancetypes").Do(ctx).Into(types); err != nil || len(types.Items) != 20 {
		t.Errorf("instance types after restart: %d, %v", len(types.Items), err)
	}
}

func TestNodeCredentialsReachOnlyTheirOwnVMs(t *testing.T) {
	c := needCluster(t)
	ctx := context.Background()
	admin := c.Admin(t)
	tenant := uniqueName("nodeauth")
	c.NewTenant(t, tenant)
	ns := kumo.TenantNamespace(tenant)
	vm := &apps.VMInstance{}
	if err := admin.Apps.Post().Namespace(ns).Resource("vminstances").Body(newVM("bound")).Do(ctx).Into(vm); err != nil {
		t.Fatal(err)
	}
	n1, n2 := uniqueName("na"), uniqueName("nb")
	if err := retry.RetryOnConflict(retry.DefaultBackoff, func() error {
		if err := admin.Apps.Get().Namespace(ns).Resource("vminstances").Name("bound").Do(ctx).Into(vm); err != nil {
			return err
		}
		vm.Status.Node, vm.Status.Incarnation, vm.Status.Phase = n2, 1, apps.VMScheduled
		return admin.Apps.Put().Namespace(ns).Resource("vminstances").Name("bound").SubResource("status").Body(vm).Do(ctx).Into(vm)
	}); err != nil {
		t.Fatal(err)
	}
	nodeClient := func(name string) *nodeClients {
		path := filepath.Join(t.TempDir(), name+".kubeconfig")
		c.MustKumo(t, c.AdminKubeconfig(), "node", "kubeconfig", name, "-o", path)
		return &nodeClients{c.Client(t, path)}
	}
	one, two := nodeClient(n1), nodeClient(n2)

	forbidden := map[string]error{
		"list all VMs":                   one.Apps.Get().Resource("vminstances").Do(ctx).Error(),
		"list another node's VMs":        one.Apps.Get().Resource("vminstances").Param("fieldSelector", "status.node="+n2).Do(ctx).Error(),
		"get a VM by name":               one.Apps.Get().Namespace(ns).Resource("vminstances").Name("bound").Do(ctx).Error(),
		"write another node's VM status": one.Apps.Put().Namespace(ns).Resource("vminstances").Name("bound").SubResource("status").Body(vm).Do(ctx).Error(),
		"delete a VM":                    one.Apps.Delete().Namespace(ns).Resource("vminstances").Name("bound").Do(ctx).Error(),
		"update another node":            one.Kumo.Put().Resource("nodes").Name(n2).Body(&kumo.Node{}).Do(ctx).Error(),
		"register as another node": one.Kumo.Post().Resource("nodes").Body(&kumo.Node{ObjectMeta: metav1.ObjectMeta{Name: n2},
			Spec: kumo.NodeSpec{Datacenter: "dc1"}}).Do(ctx).Error(),
	}
	for what, err := range forbidden {
		if !apierrors.IsForbidden(err) {
			t.Errorf("node %s: %s: want 403, got %v", n1, what, err)
		}
	}
	l := &apps.VMInstanceList{}
	if err := two.Apps.Get().Resource("vminstances").Param("fieldSelector", "status.node="+n2).Do(ctx).Into(l); err != nil || len(l.Items) != 1 {
		t.Errorf("node %s listing its own VMs: %d items, %v", n2, len(l.Items), err)
	}
	if err := retry.RetryOnConflict(retry.DefaultBackoff, func() error {
		if err := admin.Apps.Get().Namespace(ns).Resource("vminstances").Name("bound").Do(ctx).Into(vm); err != nil {
			return err
		}
		vm.Status.Phase = apps.VMRunning
		return two.Apps.Put().Namespace(ns).Resource("vminstances").Name("bound").SubResource("status").Body(vm).Do(ctx).Into(vm)
	}); err != nil {
		t.Errorf("node %s reporting its VM's status: %v", n2, err)
	}
	vm.Status.Node = n1
	if err := two.Apps.Put().Namespace(ns).Resource("vminstances").Name("bound").SubResource("status").Body(vm).Do(ctx).Error(); !apierrors.IsForbidden(err) {
		t.Errorf("node %s moving its VM to another node: want 403, got %v", n2, err)
	}
}

// nodeClients wraps typed clients for readability in node tests.
type nodeClients struct{ *client.Client }

// putVM reads the VM, applies mutate and writes it (or its subresource), retrying on conflicts.
func putVM(t *testing.T, cl *client.Client, ns, name, sub string, mutate func(*apps.VMInstance)) *apps.VMInstance {
	t.Helper()
	ctx := context.Background()
	vm := &apps.VMInstance{}
	err := retry.RetryOnConflict(retry.DefaultBackoff, func() error {
		if err := cl.Apps.Get().Namespace(ns).Resource("vminstances").Name(name).Do(ctx).Into(vm); err != nil {
			return err
		}
		mutate(vm)
		req := cl.Apps.Put().Namespace(ns).Resource("vminstances").Name(name)
		if sub != "" {
			req = req.SubResource(sub)
		}
		return req.Body(vm).Do(ctx).Into(vm)
	})
	if err != nil {
		t.Fatalf("update VM %s: %v", name, err)
	}
	return vm
}
