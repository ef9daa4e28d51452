package apiserver

import (
	"context"
	"errors"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metainternalversion "k8s.io/apimachinery/pkg/apis/meta/internalversion"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/apiserver/pkg/admission"
	"k8s.io/apiserver/pkg/authentication/user"
	genericapirequest "k8s.io/apiserver/pkg/endpoints/request"

	"kumo.dev/kumo/internal/auth"
	apps "kumo.dev/kumo/pkg/apis/apps/v1alpha1"
	kumo "kumo.dev/kumo/pkg/apis/kumo/v1alpha1"
)

// fakeStore is an in-memory store of one kind for admission's lookups: Get and List honour the
// request's namespace; err, when set, is what every call returns (an unreachable etcd).
type fakeStore struct {
	gr      schema.GroupResource
	objs    []runtime.Object
	newList func() runtime.Object
	err     error
}

func (f *fakeStore) Get(ctx context.Context, name string, _ *metav1.GetOptions) (runtime.Object, error) {
	if f.err != nil {
		return nil, f.err
	}
	ns, _ := genericapirequest.NamespaceFrom(ctx)
	for _, o := range f.objs {
		m, _ := meta.Accessor(o)
		if m.GetName() == name && m.GetNamespace() == ns {
			return o.DeepCopyObject(), nil
		}
	}
	return nil, apierrors.NewNotFound(f.gr, name)
}

func (f *fakeStore) NewList() runtime.Object { return f.newList() }

func (f *fakeStore) List(ctx context.Context, _ *metainternalversion.ListOptions) (runtime.Object, error) {
	if f.err != nil {
		return nil, f.err
	}
	ns, _ := genericapirequest.NamespaceFrom(ctx)
	var items []runtime.Object
	for _, o := range f.objs {
		if m, _ := meta.Accessor(o); ns == "" || m.GetNamespace() == ns {
			items = append(items, o.DeepCopyObject())
		}
	}
	list := f.newList()
	if err := meta.SetList(list, items); err != nil {
		return nil, err
	}
	return list, nil
}

func (f *fakeStore) ConvertToTable(context.Context, runtime.Object, runtime.Object) (*metav1.Table, error) {
	return nil, errors.New("not used")
}

const testNS = "tenant-acme"

type world struct {
	vms, disks, namespaces, tenants, types, profiles, nodes *fakeStore
}

func newWorld() *world {
	none := func() runtime.Object { return nil }
	return &world{
		vms:        &fakeStore{gr: apps.Resource("vminstances"), newList: func() runtime.Object { return &apps.VMInstanceList{} }},
		disks:      &fakeStore{gr: apps.Resource("vmdisks"), newList: func() runtime.Object { return &apps.VMDiskList{} }},
		namespaces: &fakeStore{gr: coreResource("namespaces"), newList: none},
		tenants:    &fakeStore{gr: kumo.Resource("tenants"), newList: none},
		types:      &fakeStore{gr: kumo.Resource("instancetypes"), newList: none},
		profiles:   &fakeStore{gr: kumo.Resource("instanceprofiles"), newList: none},
		nodes:      &fakeStore{gr: kumo.Resource("nodes"), newList: func() runtime.Object { return &kumo.NodeList{} }},
	}
}

func (w *world) lookups() *lookups {
	return &lookups{namespaces: w.namespaces, tenants: w.tenants, instanceTypes: w.types, instanceProfiles: w.profiles,
		vmInstances: w.vms, vmDisks: w.disks, nodes: w.nodes}
}

func (w *world) admission() *admissionChecks { return &admissionChecks{l: w.lookups()} }

func vmUsing(name string, disks ...string) *apps.VMInstance {
	vm := &apps.VMInstance{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: testNS}}
	vm.Spec.InstanceType = "u1.medium"
	for _, d := range disks {
		vm.Spec.Disks = append(vm.Spec.Disks, apps.VMDiskRef{Name: d})
	}
	return vm
}

func disk(name string, edit ...func(*apps.VMDisk)) *apps.VMDisk {
	d := &apps.VMDisk{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: testNS}}
	for _, e := range edit {
		e(d)
	}
	return d
}

func optical(d *apps.VMDisk) { d.Spec.Optical = true }

func ctxIn(ns string) context.Context {
	return genericapirequest.WithNamespace(context.Background(), ns)
}

// oneError asserts errs is exactly one error of type typ at path whose detail mentions every word.
func oneError(t *testing.T, errs field.ErrorList, typ field.ErrorType, path string, words ...string) {
	t.Helper()
	if len(errs) != 1 || errs[0].Type != typ || errs[0].Field != path {
		t.Fatalf("want one %s at %s, got %v", typ, path, errs)
	}
	for _, w := range words {
		if !strings.Contains(errs[0].Error(), w) {
			t.Errorf("error %q should mention %q", errs[0].Error(), w)
		}
	}
}

func TestSecondVMOnALocalDiskIsRefusedNamingTheFirst(t *testing.T) {
	w := newWorld()
	w.disks.objs = []runtime.Object{disk("root", func(d *apps.VMDisk) { d.Spec.StorageClass = apps.StorageLocal }), disk("other")}
	w.vms.objs = []runtime.Object{vmUsing("first", "root")}
	errs := w.lookups().exclusiveDisks(ctxIn(testNS), vmUsing("second", "other", "root"), nil)
	oneError(t, errs, field.ErrorTypeForbidden, "spec.disks[1].name", "VMDisk root", "VM first")
}

func TestVMsShareAnOpticalDisk(t *testing.T) {
	w := newWorld()
	w.disks.objs = []runtime.Object{disk("installer", optical)}
	w.vms.objs = []runtime.Object{vmUsing("first", "installer"), vmUsing("third", "installer")}
	if errs := w.lookups().exclusiveDisks(ctxIn(testNS), vmUsing("second", "installer"), nil); len(errs) != 0 {
		t.Fatalf("an optical disk may be shared: %v", errs)
	}
}

func TestAbsentDiskNamedByTwoVMsIsExclusive(t *testing.T) {
	w := newWorld()
	w.vms.objs = []runtime.Object{vmUsing("first", "later")}
	errs := w.lookups().exclusiveDisks(ctxIn(testNS), vmUsing("second", "later"), nil)
	oneError(t, errs, field.ErrorTypeForbidden, "spec.disks[0].name", "VM first")
}

func TestDiskExclusivityListsEveryOtherUser(t *testing.T) {
	w := newWorld()
	w.disks.objs = []runtime.Object{disk("root")}
	// Two VMs already share it (created before this rule): both are named.
	w.vms.objs = []runtime.Object{vmUsing("b", "root"), vmUsing("a", "root")}
	errs := w.lookups().exclusiveDisks(ctxIn(testNS), vmUsing("c", "root"), nil)
	oneError(t, errs, field.ErrorTypeForbidden, "spec.disks[0].name", "VMs a, b")
}

func TestDiskExclusivityIgnoresOtherNamespacesAndTheVMItself(t *testing.T) {
	w := newWorld()
	w.disks.objs = []runtime.Object{disk("root")}
	elsewhere := vmUsing("first", "root")
	elsewhere.Namespace = "tenant-other"
	w.vms.objs = []runtime.Object{elsewhere, vmUsing("self", "root")}
	if errs := w.lookups().exclusiveDisks(ctxIn(testNS), vmUsing("self", "root"), nil); len(errs) != 0 {
		t.Fatalf("a disk of the same name in another namespace, or the VM's own earlier version, is no conflict: %v", errs)
	}
}

func TestDiskExclusivityOnUpdateChecksOnlyAddedDisks(t *testing.T) {
	w := newWorld()
	w.disks.objs = []runtime.Object{disk("root"), disk("data")}
	w.vms.objs = []runtime.Object{vmUsing("a", "root", "data"), vmUsing("b", "root")}
	old := vmUsing("b", "root")
	// b already shared root before the rule: editing b keeps working.
	if errs := w.lookups().exclusiveDisks(ctxIn(testNS), vmUsing("b", "root"), old); len(errs) != 0 {
		t.Fatalf("an update that adds no disk is not refused: %v", errs)
	}
	errs := w.lookups().exclusiveDisks(ctxIn(testNS), vmUsing("b", "root", "data"), old)
	oneError(t, errs, field.ErrorTypeForbidden, "spec.disks[1].name", "VMDisk data", "VM a")
}

func TestDiskExclusivityReportsAnUnreadableStore(t *testing.T) {
	w := newWorld()
	w.vms.err = errors.New("etcd unreachable")
	errs := w.lookups().exclusiveDisks(ctxIn(testNS), vmUsing("second", "root"), nil)
	oneError(t, errs, field.ErrorTypeInternal, "spec.disks", "etcd unreachable")

	// A disk whose kind cannot be read is not taken for optical.
	w = newWorld()
	w.vms.objs = []runtime.Object{vmUsing("first", "iso")}
	w.disks.err = errors.New("etcd unreachable")
	errs = w.lookups().exclusiveDisks(ctxIn(testNS), vmUsing("second", "iso"), nil)
	oneError(t, errs, field.ErrorTypeInternal, "spec.disks[0].name", "etcd unreachable")
}

func TestCloneOfAnAbsentDiskIsRefused(t *testing.T) {
	w := newWorld()
	w.disks.objs = []runtime.Object{disk("db-bak"), disk("db.bak")}
	clone := disk("copy", func(d *apps.VMDisk) { d.Spec.Source.Disk = &apps.DiskSource{Name: "db"} })
	errs := w.lookups().cloneSource(ctxIn(testNS), clone)
	oneError(t, errs, field.ErrorTypeNotFound, "spec.source.disk.name", `"db"`, "no VMDisk db")
}

func TestCloneOfAPendingDiskWaits(t *testing.T) {
	w := newWorld()
	w.disks.objs = []runtime.Object{disk("db", func(d *apps.VMDisk) { d.Status.Phase = apps.DiskImporting })}
	clone := disk("copy", func(d *apps.VMDisk) { d.Spec.Source.Disk = &apps.DiskSource{Name: "db"} })
	if errs := w.lookups().cloneSource(ctxIn(testNS), clone); len(errs) != 0 {
		t.Fatalf("a clone of a disk still importing is accepted and waits: %v", errs)
	}
	w.disks.objs = []runtime.Object{disk("db", func(d *apps.VMDisk) { d.DeletionTimestamp = &metav1.Time{} })}
	oneError(t, w.lookups().cloneSource(ctxIn(testNS), clone), field.ErrorTypeForbidden, "spec.source.disk.name", "being deleted")

	other := disk("db")
	other.Namespace = "tenant-other"
	w.disks.objs = []runtime.Object{other}
	oneError(t, w.lookups().cloneSource(ctxIn(testNS), clone), field.ErrorTypeNotFound, "spec.source.disk.name")
}

// attrs builds the admission attributes of a request by u.
func attrs(op admission.Operation, gr schema.GroupResource, ns, name, sub string, obj, old runtime.Object, u user.Info) admission.Attributes {
	return admission.NewAttributesRecord(obj, old, schema.GroupVersionKind{}, ns, name, gr.WithVersion("v1alpha1"), sub, op, nil, false, u)
}

var (
	admin      = &user.DefaultInfo{Name: auth.AdminUser, Groups: []string{auth.GroupAdmins}}
	tenantUser = &user.DefaultInfo{Name: "alice", Groups: []string{auth.GroupTenants, auth.GroupTenantPrefix + "acme"}}
	node1      = &user.DefaultInfo{Name: auth.NodeUserPrefix + "n1", Groups: []string{auth.GroupNodes}}
)

func TestDeletingADiskOfAStoppedVMIsRefusedNamingIt(t *testing.T) {
	w := newWorld()
	stopped := vmUsing("db-vm", "boot", "data")
	stopped.Status.Phase = apps.VMStopped // no node: stopped VMs keep their disks too
	running := vmUsing("web", "data")
	running.Status.Node, running.Status.Phase = "n1", apps.VMRunning
	w.vms.objs = []runtime.Object{stopped, running, vmUsing("other", "scratch")}
	w.disks.objs = []runtime.Object{disk("boot"), disk("data"), disk("free")}
	a := w.admission()

	err := a.Validate(context.Background(), attrs(admission.Delete, apps.Resource("vmdisks"), testNS, "data", "", nil, disk("data"), tenantUser), nil)
	if !apierrors.IsConflict(err) || !strings.Contains(err.Error(), "VMs db-vm, web") {
		t.Fatalf("deleting a disk two VMs name: want 409 naming both, got %v", err)
	}
	err = a.Validate(context.Background(), attrs(admission.Delete, apps.Resource("vmdisks"), testNS, "boot", "", nil, disk("boot"), tenantUser), nil)
	if !apierrors.IsConflict(err) || !strings.Contains(err.Error(), "VM db-vm") {
		t.Fatalf("deleting the disk of a stopped VM: want 409 naming it, got %v", err)
	}
	// deletecollection admits each object without a name in the request.
	err = a.Validate(context.Background(), attrs(admission.Delete, apps.Resource("vmdisks"), testNS, "", "", nil, disk("boot"), tenantUser), nil)
	if !apierrors.IsConflict(err) {
		t.Fatalf("deleting a used disk through deletecollection: want 409, got %v", err)
	}
	if err := a.Validate(context.Background(), attrs(admission.Delete, apps.Resource("vmdisks"), testNS, "free", "", nil, disk("free"), tenantUser), nil); err != nil {
		t.Fatalf("deleting a disk no VM names: %v", err)
	}
	w.vms.err = errors.New("etcd unreachable")
	if err := a.Validate(context.Background(), attrs(admission.Delete, apps.Resource("vmdisks"), testNS, "free", "", nil, disk("free"), tenantUser), nil); err == nil {
		t.Fatal("a disk is deleted although the VMs naming it could not be read")
	}
}

func TestDeletingTheSourceOfAPendingCloneIsRefused(t *testing.T) {
	w := newWorld()
	clone := disk("copy", func(d *apps.VMDisk) {
		d.Spec.Source.Disk = &apps.DiskSource{Name: "db"}
		d.Status.Phase = apps.DiskPending
	})
	w.disks.objs = []runtime.Object{disk("db"), clone}
	a := w.admission()
	err := a.Validate(context.Background(), attrs(admission.Delete, apps.Resource("vmdisks"), testNS, "db", "", nil, disk("db"), tenantUser), nil)
	if !apierrors.IsConflict(err) || !strings.Contains(err.Error(), "VMDisk copy") {
		t.Fatalf("want 409 naming the pending clone, got %v", err)
	}
	clone.Status.Phase = apps.DiskReady
	if err := a.Validate(context.Background(), attrs(admission.Delete, apps.Resource("vmdisks"), testNS, "db", "", nil, disk("db"), tenantUser), nil); err != nil {
		t.Fatalf("the source of a finished clone may go: %v", err)
	}
}

func TestTenantHoldingObjectsIsNotDeleted(t *testing.T) {
	w := newWorld()
	w.vms.objs = []runtime.Object{vmUsing("a"), vmUsing("b")}
	w.disks.objs = []runtime.Object{disk("root")}
	a := w.admission()
	err := a.Validate(context.Background(), attrs(admission.Delete, kumo.Resource("tenants"), "", "acme", "", nil, nil, admin), nil)
	if !apierrors.IsConflict(err) || !strings.Contains(err.Error(), "2 VMInstances and 1 VMDisk") {
		t.Fatalf("want 409 counting what the tenant holds, got %v", err)
	}
	if err := a.Validate(context.Background(), attrs(admission.Delete, kumo.Resource("tenants"), "", "empty", "", nil, nil, admin), nil); err != nil {
		t.Fatalf("an empty tenant may go: %v", err)
	}
}

func TestNamespaceRules(t *testing.T) {
	w := newWorld()
	w.namespaces.objs = []runtime.Object{
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: testNS, Labels: map[string]string{LabelTenant: "acme"}}},
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "default"}},
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "tenant-gone", Labels: map[string]string{LabelTenant: "gone"}, DeletionTimestamp: &metav1.Time{}}},
	}
	w.tenants.objs = []runtime.Object{&kumo.Tenant{ObjectMeta: metav1.ObjectMeta{Name: "acme"}}}
	a := w.admission()
	create := func(ns string, gr schema.GroupResource) error {
		return a.Validate(context.Background(), attrs(admission.Create, gr, ns, "x", "", vmUsing("x"), nil, admin), nil)
	}
	if err := create(testNS, apps.Resource("vminstances")); err != nil {
		t.Errorf("a VM in a tenant's namespace: %v", err)
	}
	if err := create("tenant-nobody", apps.Resource("vminstances")); !apierrors.IsNotFound(err) || !strings.Contains(err.Error(), "kumo tenant create nobody") {
		t.Errorf("a VM in a missing tenant namespace: want 404 with a hint, got %v", err)
	}
	if err := create("default", apps.Resource("vmdisks")); !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), "belongs to no tenant") {
		t.Errorf("a disk outside any tenant: want 403, got %v", err)
	}
	if err := create("default", coreResource("events")); err != nil {
		t.Errorf("events outside tenants are fine: %v", err)
	}
	if err := create("tenant-gone", apps.Resource("vmdisks")); !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), "being terminated") {
		t.Errorf("a disk in a terminating namespace: want 403, got %v", err)
	}
	err := a.Validate(context.Background(), attrs(admission.Delete, coreResource("namespaces"), "", testNS, "", nil, nil, admin), nil)
	if !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), "delete the tenant instead") {
		t.Errorf("deleting a live tenant's namespace: want 403, got %v", err)
	}
	if err := a.Validate(context.Background(), attrs(admission.Delete, coreResource("namespaces"), "", "tenant-gone", "", nil, nil, admin), nil); err != nil {
		t.Errorf("the namespace of a deleted tenant may go: %v", err)
	}
	w.namespaces.err = errors.New("etcd unreachable")
	if err := create(testNS, apps.Resource("vminstances")); err == nil || apierrors.IsNotFound(err) {
		t.Errorf("an unreadable namespace is not absent: got %v", err)
	}
}

func TestNodeRegistersOnlyItself(t *testing.T) {
	a := newWorld().admission()
	if err := a.Validate(context.Background(), attrs(admission.Create, kumo.Resource("nodes"), "", "n1", "", &kumo.Node{}, nil, node1), nil); err != nil {
		t.Errorf("node n1 registers itself: %v", err)
	}
	if err := a.Validate(context.Background(), attrs(admission.Create, kumo.Resource("nodes"), "", "n2", "", &kumo.Node{}, nil, node1), nil); !apierrors.IsForbidden(err) {
		t.Errorf("node n1 registering n2: want 403, got %v", err)
	}
}

func TestNodeWritesStatusOfItsOwnVMsOnly(t *testing.T) {
	a := newWorld().admission()
	bound := func(node string, inc int64) *apps.VMInstance {
		vm := vmUsing("vm")
		vm.Status.Node, vm.Status.Incarnation, vm.Status.Datacenter = node, inc, "dc1"
		return vm
	}
	status := func(obj, old runtime.Object, gr schema.GroupResource) error {
		return a.Validate(context.Background(), attrs(admission.Update, gr, testNS, "vm", "status", obj, old, node1), nil)
	}
	vms := apps.Resource("vminstances")
	if err := status(bound("n1", 3), bound("n1", 3), vms); err != nil {
		t.Errorf("n1 writes the status of its VM: %v", err)
	}
	if err := status(bound("n2", 3), bound("n2", 3), vms); !apierrors.IsForbidden(err) {
		t.Errorf("n1 writing the status of n2's VM: want 403, got %v", err)
	}
	if err := status(bound("n2", 3), bound("n1", 3), vms); !apierrors.IsForbidden(err) {
		t.Errorf("n1 moving its VM to n2: want 403, got %v", err)
	}
	if err := status(bound("n1", 4), bound("n1", 3), vms); !apierrors.IsForbidden(err) {
		t.Errorf("n1 starting an incarnation itself: want 403, got %v", err)
	}
	onNode := func(n string) *apps.VMDisk { return disk("d", func(d *apps.VMDisk) { d.Status.Node = n }) }
	disks := apps.Resource("vmdisks")
	if err := status(onNode("n1"), onNode("n1"), disks); err != nil {
		t.Errorf("n1 writes the status of its disk: %v", err)
	}
	// Placing a disk would hand the node the tenant's disk key (vmdisks/NAME/diskkey): a node
	// cannot claim any unplaced disk of any tenant.
	if err := status(onNode("n1"), onNode(""), disks); !apierrors.IsForbidden(err) {
		t.Errorf("n1 placing an unplaced disk on itself: want 403, got %v", err)
	}
	if err := status(onNode(""), onNode("n1"), disks); !apierrors.IsForbidden(err) {
		t.Errorf("n1 unplacing its disk: want 403, got %v", err)
	}
	if err := status(onNode("n1"), onNode("n2"), disks); !apierrors.IsForbidden(err) {
		t.Errorf("n1 taking n2's disk: want 403, got %v", err)
	}
	if err := status(onNode("n2"), onNode(""), disks); !apierrors.IsForbidden(err) {
		t.Errorf("n1 placing a disk on n2: want 403, got %v", err)
	}
}

func TestVMReferencesResolve(t *testing.T) {
	w := newWorld()
	w.types.objs = []runtime.Object{&kumo.InstanceType{ObjectMeta: metav1.ObjectMeta{Name: "u1.medium"}}}
	w.profiles.objs = []runtime.Object{&kumo.InstanceProfile{ObjectMeta: metav1.ObjectMeta{Name: "ubuntu"}}}
	vm := vmUsing("vm")
	vm.Spec.InstanceProfile = "ubuntu"
	if errs := w.lookups().vmReferences(context.Background(), vm, nil); len(errs) != 0 {
		t.Fatalf("known type and profile: %v", errs)
	}
	vm.Spec.InstanceType = "u9.huge"
	oneError(t, w.lookups().vmReferences(context.Background(), vm, nil), field.ErrorTypeNotFound, "spec.instanceType", "no such instance type")
	// An update that keeps a type deleted since is accepted.
	if errs := w.lookups().vmReferences(context.Background(), vm, vm.DeepCopy()); len(errs) != 0 {
		t.Fatalf("an unchanged reference is not re-checked: %v", errs)
	}
}

// A running VM keeps its disks open until its incarnation ends: detaching one in the spec would
// let another VM take it (or let it be deleted) while QEMU still writes it.
func TestDiskCannotBeDetachedFromABoundVM(t *testing.T) {
	w := newWorld()
	w.disks.objs = []runtime.Object{disk("root"), disk("data"), disk("iso", optical)}
	old := vmUsing("a", "root", "data", "iso", "gone")
	old.Status.Node, old.Status.Incarnation = "n1", 3
	w.vms.objs = []runtime.Object{old}

	errs := w.lookups().detachedWhileBound(ctxIn(testNS), vmUsing("a", "root", "gone"), old)
	oneError(t, errs, field.ErrorTypeForbidden, "spec.disks", "VMDisk data", "node n1", "incarnation 3")
	// The API's update validation runs it.
	found := false
	for _, e := range vmInstanceKind(w.lookups()).ValidateUpdate(ctxIn(testNS), vmUsing("a", "root", "gone"), old) {
		found = found || (e.Type == field.ErrorTypeForbidden && e.Field == "spec.disks" && strings.Contains(e.Detail, "VMDisk data"))
	}
	if !found {
		t.Error("a VM update detaching a disk from its running incarnation passes validation")
	}

	// Once detached, the disk is free for admission (and the scheduler, and the delete guard):
	// this check is all that keeps it with the QEMU that still has it open.
	w.vms.objs = []runtime.Object{vmUsing("a", "root", "gone")}
	if errs := w.lookups().exclusiveDisks(ctxIn(testNS), vmUsing("b", "data"), nil); len(errs) != 0 {
		t.Fatalf("precondition: %v", errs)
	}
	w.vms.objs = []runtime.Object{old}
	// Reordering, adding, or detaching an optical disk (or one that does not exist) is fine.
	if errs := w.lookups().detachedWhileBound(ctxIn(testNS), vmUsing("a", "data", "new", "root"), old); len(errs) != 0 {
		t.Errorf("reorder/add refused: %v", errs)
	}
	// A stopped VM (released by its node) may drop any disk.
	stopped := old.DeepCopy()
	stopped.Status.Node = ""
	if errs := w.lookups().detachedWhileBound(ctxIn(testNS), vmUsing("a"), stopped); len(errs) != 0 {
		t.Errorf("detaching from a stopped VM refused: %v", errs)
	}
	// A disk whose kind cannot be read is not taken for optical.
	w.disks.err = errors.New("etcd unreachable")
	errs = w.lookups().detachedWhileBound(ctxIn(testNS), vmUsing("a", "root", "data", "gone"), old)
	oneError(t, errs, field.ErrorTypeInternal, "spec.disks", "etcd unreachable")
}

// The drivers copy data of their own class only (local: a file of the node; replicated: an RBD
// image): a copy across classes was accepted, placed, and then failed on the node.
func TestCloneAcrossStorageClassesIsRefused(t *testing.T) {
	w := newWorld()
	w.disks.objs = []runtime.Object{disk("db", func(d *apps.VMDisk) { d.Spec.StorageClass = apps.StorageLocal })}
	clone := disk("copy", func(d *apps.VMDisk) {
		d.Spec.StorageClass = apps.StorageReplicated
		d.Spec.Source.Disk = &apps.DiskSource{Name: "db"}
	})
	oneError(t, w.lookups().cloneSource(ctxIn(testNS), clone), field.ErrorTypeForbidden, "spec.storageClass", "VMDisk db", `"local"`)
	clone.Spec.StorageClass = apps.StorageLocal
	if errs := w.lookups().cloneSource(ctxIn(testNS), clone); len(errs) != 0 {
		t.Errorf("a copy in the source's class: %v", errs)
	}
}

func TestCPUModelMustBeOfferedByANode(t *testing.T) {
	w := newWorld()
	w.types.objs = []runtime.Object{&kumo.InstanceType{ObjectMeta: metav1.ObjectMeta{Name: "u1.medium"}}}
	vm := vmUsing("vm")
	vm.Spec.CPUModel = "Skylake-Server-v4"
	// No node has reported its models yet: accepted (the node's start says more).
	if errs := w.lookups().vmReferences(context.Background(), vm, nil); len(errs) != 0 {
		t.Fatalf("no node reported models: %v", errs)
	}
	w.nodes.objs = []runtime.Object{
		&kumo.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1"}, Status: kumo.NodeStatus{Accelerator: "tcg", CPUModels: []string{"max", "qemu64"}}},
		&kumo.Node{ObjectMeta: metav1.ObjectMeta{Name: "n2"}, Status: kumo.NodeStatus{Accelerator: "tcg", CPUModels: []string{"EPYC-v4", "max", "qemu64"}}},
	}
	oneError(t, w.lookups().vmReferences(context.Background(), vm, nil), field.ErrorTypeInvalid, "spec.cpuModel", "no node's QEMU offers")
	vm.Spec.CPUModel = "EPYC-v4"
	if errs := w.lookups().vmReferences(context.Background(), vm, nil); len(errs) != 0 {
		t.Fatalf("a model n2 offers: %v", errs)
	}
	vm.Spec.CPUModel = "host"
	oneError(t, w.lookups().vmReferences(context.Background(), vm, nil), field.ErrorTypeInvalid, "spec.cpuModel", "needs KVM")
	w.nodes.objs = append(w.nodes.objs, &kumo.Node{ObjectMeta: metav1.ObjectMeta{Name: "n3"}, Status: kumo.NodeStatus{Accelerator: "kvm", CPUModels: []string{"host"}}})
	if errs := w.lookups().vmReferences(context.Background(), vm, nil); len(errs) != 0 {
		t.Fatalf("host with a KVM node: %v", errs)
	}
}
