package apiserver

import (
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apiserver/pkg/admission"

	apps "kumo.dev/kumo/pkg/apis/apps/v1alpha1"
	kumo "kumo.dev/kumo/pkg/apis/kumo/v1alpha1"
)

func quotaWorld(q kumo.TenantResources) *world {
	w := newWorld()
	w.namespaces.objs = []runtime.Object{&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: testNS, Labels: map[string]string{LabelTenant: "acme"}}}}
	w.tenants.objs = []runtime.Object{&kumo.Tenant{ObjectMeta: metav1.ObjectMeta{Name: "acme"}, Spec: kumo.TenantSpec{Quota: q}}}
	w.types.objs = []runtime.Object{&kumo.InstanceType{ObjectMeta: metav1.ObjectMeta{Name: "u1.medium"},
		Spec: kumo.InstanceTypeSpec{CPUs: 1, Memory: resource.MustParse("4Gi")}}}
	return w
}

func count(n int64) *int64 { return &n }

func sized(class apps.StorageClass, size string) func(*apps.VMDisk) {
	return func(d *apps.VMDisk) {
		q := resource.MustParse(size)
		d.Spec.Storage, d.Spec.StorageClass = &q, class
	}
}

func createIn(a *admissionChecks, gr string, obj runtime.Object) error {
	return a.Validate(context.Background(), attrs(admission.Create, apps.Resource(gr), testNS, "", "", obj, nil, tenantUser), nil)
}

func TestVMBeyondTheTenantsQuotaIsRefusedNamingQuotaAndUsage(t *testing.T) {
	w := quotaWorld(kumo.TenantResources{VMs: count(2), CPUs: count(8)})
	w.vms.objs = []runtime.Object{vmUsing("a"), vmUsing("b")}
	err := createIn(w.admission(), "vminstances", vmUsing("c"))
	if !apierrors.IsForbidden(err) {
		t.Fatalf("a third VM with a quota of 2: want 403, got %v", err)
	}
	for _, want := range []string{"exceeded quota of tenant acme", "requested: vms=1", "used: vms=2", "limited: vms=2", "spec.quota"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q should say %q", err, want)
		}
	}
	if strings.Contains(err.Error(), "cpus") {
		t.Errorf("error %q names a limit that is not exceeded", err)
	}
	// Within the quota: a VM of another tenant does not count.
	other := vmUsing("b")
	other.Namespace = "tenant-other"
	w.vms.objs = []runtime.Object{vmUsing("a"), other}
	if err := createIn(w.admission(), "vminstances", vmUsing("c")); err != nil {
		t.Fatalf("a second VM of acme with a quota of 2: %v", err)
	}
}

func TestVMCPUAndMemoryCountTheInstanceType(t *testing.T) {
	w := quotaWorld(kumo.TenantResources{CPUs: count(3), Memory: resource.NewQuantity(10<<30, resource.BinarySI)})
	w.types.objs = append(w.types.objs, &kumo.InstanceType{ObjectMeta: metav1.ObjectMeta{Name: "u1.large"},
		Spec: kumo.InstanceTypeSpec{CPUs: 2, Memory: resource.MustParse("8Gi")}})
	stopped := vmUsing("a") // stopped VMs count too: they can start again at any time
	stopped.Spec.RunStrategy = apps.RunHalted
	w.vms.objs = []runtime.Object{stopped}
	big := vmUsing("b")
	big.Spec.InstanceType = "u1.large"
	err := createIn(w.admission(), "vminstances", big)
	if !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), "requested: memory=8Gi, used: memory=4Gi, limited: memory=10Gi") {
		t.Fatalf("8Gi more memory than a 10Gi quota holding 4Gi: want 403 naming memory, got %v", err)
	}
	if err := createIn(w.admission(), "vminstances", vmUsing("b")); err != nil {
		t.Fatalf("a 1 vCPU / 4Gi VM fits: %v", err)
	}
}

func TestResizingAVMPastTheQuotaIsRefusedButShrinkingIsNot(t *testing.T) {
	w := quotaWorld(kumo.TenantResources{CPUs: count(2)})
	w.types.objs = append(w.types.objs, &kumo.InstanceType{ObjectMeta: metav1.ObjectMeta{Name: "u1.xlarge"},
		Spec: kumo.InstanceTypeSpec{CPUs: 4, Memory: resource.MustParse("16Gi")}})
	old := vmUsing("a")
	w.vms.objs = []runtime.Object{old}
	bigger := vmUsing("a")
	bigger.Spec.InstanceType = "u1.xlarge"
	update := func(obj, prev runtime.Object) error {
		return w.admission().Validate(context.Background(), attrs(admission.Update, apps.Resource("vminstances"), testNS, "a", "", obj, prev, tenantUser), nil)
	}
	if err := update(bigger, old); !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), "requested: cpus=4, used: cpus=0, limited: cpus=2") {
		t.Fatalf("growing a VM past its quota: want 403, got %v", err)
	}
	// A tenant already over a lowered limit may still shrink and edit.
	w.vms.objs = []runtime.Object{bigger}
	if err := update(vmUsing("a"), bigger); err != nil {
		t.Fatalf("shrinking a VM over its quota: %v", err)
	}
	relabelled := bigger.DeepCopy()
	relabelled.Labels = map[string]string{"team": "web"}
	if err := update(relabelled, bigger); err != nil {
		t.Fatalf("an update that grows nothing, over quota: %v", err)
	}
}

func TestDiskBytesAreLimitedPerStorageClass(t *testing.T) {
	w := quotaWorld(kumo.TenantResources{Storage: &kumo.StorageResources{Local: resource.NewQuantity(100<<30, resource.BinarySI)}})
	w.disks.objs = []runtime.Object{disk("a", sized(apps.StorageLocal, "60Gi")), disk("r", sized(apps.StorageReplicated, "1Ti"))}
	err := createIn(w.admission(), "vmdisks", disk("b", sized(apps.StorageLocal, "50Gi")))
	if !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), "requested: storage.local=50Gi, used: storage.local=60Gi, limited: storage.local=100Gi") {
		t.Fatalf("local disks past 100Gi: want 403 naming storage.local, got %v", err)
	}
	// Replicated bytes have their own limit (default 2Ti).
	if err := createIn(w.admission(), "vmdisks", disk("c", sized(apps.StorageReplicated, "500Gi"))); err != nil {
		t.Fatalf("a replicated disk within its class's quota: %v", err)
	}
	err = createIn(w.admission(), "vmdisks", disk("d", sized(apps.StorageReplicated, "1100Gi")))
	if !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), "limited: storage.replicated=2Ti") {
		t.Fatalf("replicated past the default 2Ti: want 403, got %v", err)
	}
	grown := disk("a", sized(apps.StorageLocal, "120Gi"))
	err = w.admission().Validate(context.Background(), attrs(admission.Update, apps.Resource("vmdisks"), testNS, "a", "", grown, disk("a", sized(apps.StorageLocal, "60Gi")), tenantUser), nil)
	if !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), "requested: storage.local=120Gi, used: storage.local=0, limited: storage.local=100Gi") {
		t.Fatalf("growing a disk past the quota: want 403, got %v", err)
	}
}

func TestPublicIPsAndDisksAreCounted(t *testing.T) {
	w := quotaWorld(kumo.TenantResources{PublicIPs: count(1), Disks: count(1)})
	ext := vmUsing("a")
	ext.Spec.External = true
	w.vms.objs = []runtime.Object{ext}
	w.disks.objs = []runtime.Object{disk("d", sized(apps.StorageReplicated, "1Gi"))}
	second := vmUsing("b")
	second.Spec.External = true
	if err := createIn(w.admission(), "vminstances", second); !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), "publicIPs=1") {
		t.Fatalf("a second public IP with a quota of 1: want 403, got %v", err)
	}
	if err := createIn(w.admission(), "vminstances", vmUsing("b")); err != nil {
		t.Fatalf("a VM without a public IP: %v", err)
	}
	if err := createIn(w.admission(), "vmdisks", disk("e", sized(apps.StorageReplicated, "1Gi"))); !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), "disks=1") {
		t.Fatalf("a second disk with a quota of 1: want 403, got %v", err)
	}
}

func TestDefaultQuotaAppliesToTenantsWithoutOne(t *testing.T) {
	w := quotaWorld(kumo.TenantResources{})
	for i := 0; i < kumo.DefaultQuotaVMs; i++ {
		w.vms.objs = append(w.vms.objs, vmUsing("vm"+string(rune('a'+i))))
	}
	err := createIn(w.admission(), "vminstances", vmUsing("one-more"))
	if !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), "limited: vms=20") {
		t.Fatalf("VM 21 under the default quota: want 403, got %v", err)
	}
	tenant := &kumo.Tenant{ObjectMeta: metav1.ObjectMeta{Name: "t"}}
	tenantKind().PrepareForCreate(tenant)
	if q := tenant.Spec.Quota; q.VMs == nil || *q.VMs != kumo.DefaultQuotaVMs || q.Storage == nil || q.Storage.Local.String() != kumo.DefaultQuotaLocalStorage {
		t.Fatalf("a new tenant shows its default quota: %+v", q)
	}
}

func TestNegativeQuotaIsInvalid(t *testing.T) {
	tn := &kumo.Tenant{ObjectMeta: metav1.ObjectMeta{Name: "t"}, Spec: kumo.TenantSpec{Quota: kumo.TenantResources{VMs: count(-1)}}}
	errs := tenantKind().Validate(context.Background(), tn)
	if len(errs) != 1 || errs[0].Field != "spec.quota.vms" {
		t.Fatalf("want one error at spec.quota.vms, got %v", errs)
	}
}

// Two creates at once must not both take the last free unit: the VM store serializes its writes
// per namespace around admission and the write.
func TestConcurrentCreatesCannotBothTakeTheLastUnit(t *testing.T) {
	var g namespaceGate
	var mu sync.Mutex
	held := 0
	inside := make(chan int, 2)
	var wg sync.WaitGroup
	for i := 0; i < 2; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx := ctxIn(testNS)
			defer g.enter(ctx)()
			defer g.serialize(ctx)()
			mu.Lock()
			held++
			inside <- held
			mu.Unlock()
			time.Sleep(20 * time.Millisecond) // admission reads usage, the store writes
			mu.Lock()
			held--
			mu.Unlock()
		}()
	}
	wg.Wait()
	close(inside)
	for n := range inside {
		if n != 1 {
			t.Fatalf("%d counted writes of one namespace ran at once", n)
		}
	}
	// Draining a terminating namespace still works while writes are serialized.
	done := make(chan struct{})
	go func() { g.drain(testNS); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("drain blocked")
	}
}

// spec.resources sizes a VM over its instance type (scheduler and agent alike): the quota counts
// what the VM really gets, so resources cannot slip past a vCPU or memory limit.
func TestVMSizedByResourcesCountsItsResources(t *testing.T) {
	w := quotaWorld(kumo.TenantResources{CPUs: count(3)})
	big := vmUsing("b")
	big.Spec.Resources = &apps.Resources{}
	if err := json.Unmarshal([]byte(`{"cpu":"4","memory":"1Gi"}`), big.Spec.Resources); err != nil {
		t.Fatal(err)
	}
	err := createIn(w.admission(), "vminstances", big)
	if !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), "requested: cpus=4") {
		t.Fatalf("4 vCPUs from spec.resources against a quota of 3 (its instance type has 1): want 403 naming cpus=4, got %v", err)
	}
}
