package scheduler

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"

	apps "kumo.dev/kumo/pkg/apis/apps/v1alpha1"
	kumo "kumo.dev/kumo/pkg/apis/kumo/v1alpha1"
	"kumo.dev/kumo/pkg/client"
)

// The scheduler's rules, driven through its informers' stores (filled by hand) and a fake API
// server that records every status write.

const ns = "tenant-acme"

type write struct {
	path string
	body []byte
}

// fakeAPI answers every status PUT with the object it was sent and records it.
type fakeAPI struct {
	mu     sync.Mutex
	writes []write
}

func (f *fakeAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	if r.Method != http.MethodPut || !strings.HasSuffix(r.URL.Path, "/status") {
		http.Error(w, "unexpected "+r.Method+" "+r.URL.Path, http.StatusMethodNotAllowed)
		return
	}
	f.mu.Lock()
	f.writes = append(f.writes, write{path: r.URL.Path, body: body})
	f.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	w.Write(body)
}

// vmWrites returns the status writes to VM name, in order.
func (f *fakeAPI) vmWrites(t *testing.T, name string) []apps.VMInstance {
	t.Helper()
	var out []apps.VMInstance
	for _, w := range f.all("/vminstances/" + name + "/status") {
		vm := apps.VMInstance{}
		if err := json.Unmarshal(w.body, &vm); err != nil {
			t.Fatal(err)
		}
		out = append(out, vm)
	}
	return out
}

func (f *fakeAPI) diskWrites(t *testing.T, name string) []apps.VMDisk {
	t.Helper()
	var out []apps.VMDisk
	for _, w := range f.all("/vmdisks/" + name + "/status") {
		d := apps.VMDisk{}
		if err := json.Unmarshal(w.body, &d); err != nil {
			t.Fatal(err)
		}
		out = append(out, d)
	}
	return out
}

func (f *fakeAPI) all(suffix string) []write {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []write
	for _, w := range f.writes {
		if strings.HasSuffix(w.path, suffix) {
			out = append(out, w)
		}
	}
	return out
}

type fixture struct {
	ctl *Controller
	api *fakeAPI
	inf Informers
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	api := &fakeAPI{}
	srv := httptest.NewServer(api)
	t.Cleanup(srv.Close)
	c, err := client.New(&rest.Config{Host: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	store := func(obj runtime.Object) cache.SharedIndexInformer {
		return cache.NewSharedIndexInformer(&cache.ListWatch{}, obj, 0, cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc})
	}
	inf := Informers{VMs: store(&apps.VMInstance{}), Nodes: store(&kumo.Node{}), Types: store(&kumo.InstanceType{}), Disks: store(&apps.VMDisk{})}
	ctl := NewController(c, inf)
	ctl.recorder = record.NewFakeRecorder(100)
	t.Cleanup(func() { ctl.queue.ShutDown(); ctl.diskQueue.ShutDown() })
	inf.Types.GetStore().Add(&kumo.InstanceType{ObjectMeta: metav1.ObjectMeta{Name: "s1.small"}, Spec: kumo.InstanceTypeSpec{CPUs: 1, Memory: resource.MustParse("1Gi")}})
	return &fixture{ctl: ctl, api: api, inf: inf}
}

func (f *fixture) node(name, dc string, ready bool, classes []string, images ...string) {
	n := &kumo.Node{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: kumo.NodeSpec{Datacenter: dc}}
	n.Status.Allocatable = map[string]resource.Quantity{"cpu": resource.MustParse("8"), "memory": resource.MustParse("32Gi"), kumo.ResourceLocalStorage: resource.MustParse("1Ti")}
	n.Status.StorageClasses, n.Status.Images = classes, images
	n.Status.LastHeartbeatTime = metav1.Now()
	status := metav1.ConditionTrue
	if !ready {
		status = metav1.ConditionFalse
	}
	n.Status.Conditions = []metav1.Condition{{Type: kumo.NodeConditionReady, Status: status, Reason: "Test"}}
	f.inf.Nodes.GetStore().Add(n)
}

func (f *fixture) disk(name string, class apps.StorageClass, phase apps.VMDiskPhase, node string, mutate ...func(*apps.VMDisk)) *apps.VMDisk {
	d := &apps.VMDisk{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: types.UID("uid-" + name), ResourceVersion: "1"},
		Spec:   apps.VMDiskSpec{StorageClass: class},
		Status: apps.VMDiskStatus{Phase: phase, Node: node}}
	for _, m := range mutate {
		m(d)
	}
	f.inf.Disks.GetStore().Add(d)
	return d
}

func (f *fixture) vm(name, node string, disks ...string) *apps.VMInstance {
	vm := &apps.VMInstance{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, ResourceVersion: "1"},
		Spec:   apps.VMInstanceSpec{InstanceType: "s1.small", RunStrategy: apps.RunAlways},
		Status: apps.VMInstanceStatus{Phase: apps.VMPending, Node: node}}
	if node != "" {
		vm.Status.Phase, vm.Status.Incarnation = apps.VMRunning, 1
	}
	for _, d := range disks {
		vm.Spec.Disks = append(vm.Spec.Disks, apps.VMDiskRef{Name: d})
	}
	f.inf.VMs.GetStore().Add(vm)
	return vm
}

func (f *fixture) schedule(t *testing.T, name string) {
	t.Helper()
	if _, err := f.ctl.schedule(context.Background(), ns+"/"+name); err != nil {
		t.Fatalf("schedule %s: %v", name, err)
	}
}

func (f *fixture) place(t *testing.T, name string) {
	t.Helper()
	if err := f.ctl.placeDisk(context.Background(), ns+"/"+name); err != nil {
		t.Fatalf("place disk %s: %v", name, err)
	}
}

// lastScheduled is the Scheduled condition of the VM's last status write (nil: none written).
func (f *fixture) lastScheduled(t *testing.T, name string) (*apps.VMInstance, *metav1.Condition) {
	t.Helper()
	w := f.api.vmWrites(t, name)
	if len(w) == 0 {
		return nil, nil
	}
	vm := w[len(w)-1]
	return &vm, meta.FindStatusCondition(vm.Status.Conditions, apps.ConditionScheduled)
}

func TestVMWaitsForItsDisksNamingTheDiskAndItsProgress(t *testing.T) {
	f := newFixture(t)
	f.node("n1", "dc1", true, []string{"local"})
	f.disk("root", apps.StorageLocal, apps.DiskReady, "n1")
	f.disk("data", apps.StorageLocal, apps.DiskImporting, "n1", func(d *apps.VMDisk) { d.Status.Progress = "42%" })
	f.vm("web", "", "root", "data")
	f.schedule(t, "web")
	vm, c := f.lastScheduled(t, "web")
	if c == nil || c.Status != metav1.ConditionFalse || c.Reason != ReasonWaitingForDisk || c.Message != "waiting for disk data (importing 42%)" {
		t.Fatalf("want the VM waiting for disk data at 42%%, got %+v", c)
	}
	if vm.Status.Node != "" {
		t.Errorf("a VM whose disk is importing was bound to %s", vm.Status.Node)
	}
	// Once the disk is ready the VM is bound to the disks' node.
	f.disk("data", apps.StorageLocal, apps.DiskReady, "n1")
	f.schedule(t, "web")
	if vm, _ := f.lastScheduled(t, "web"); vm.Status.Node != "n1" || vm.Status.Phase != apps.VMScheduled || vm.Status.Incarnation != 1 {
		t.Errorf("want incarnation 1 bound to n1, got %+v", vm.Status)
	}
}

func TestFailedDiskMakesTheVMUnschedulableWithTheDisksError(t *testing.T) {
	f := newFixture(t)
	f.node("n1", "dc1", true, []string{"local"})
	f.disk("pending", apps.StorageLocal, apps.DiskPending, "")
	f.disk("bad", apps.StorageLocal, apps.DiskFailed, "n1", func(d *apps.VMDisk) {
		d.Status.Conditions = []metav1.Condition{
			{Type: ConditionDiskScheduled, Status: metav1.ConditionTrue, Reason: "Placed", Message: "held by node n1"},
			{Type: "Ready", Status: metav1.ConditionFalse, Reason: "PrepareFailed", Message: "image refused: format raw is not a whole number of sectors"},
		}
	})
	f.vm("web", "", "pending", "bad")
	f.schedule(t, "web")
	_, c := f.lastScheduled(t, "web")
	if c == nil || c.Reason != ReasonUnschedulable || c.Message != "disk bad failed: image refused: format raw is not a whole number of sectors" {
		t.Fatalf("want the failed disk's error (before waiting for the other disk), got %+v", c)
	}
	if ev := drain(f.ctl.recorder); !strings.Contains(ev, "Warning FailedScheduling disk bad failed") {
		t.Errorf("events %q", ev)
	}
}

func TestVMIsRefusedWhileAnotherBoundVMUsesItsDisk(t *testing.T) {
	f := newFixture(t)
	f.node("n1", "dc1", true, []string{"local"})
	f.disk("shared", apps.StorageLocal, apps.DiskReady, "n1")
	f.disk("cd", apps.StorageLocal, apps.DiskReady, "n1", func(d *apps.VMDisk) { d.Spec.Optical = true })
	f.vm("first", "n1", "shared")
	f.vm("second", "", "shared")
	f.schedule(t, "second")
	vm, c := f.lastScheduled(t, "second")
	if c == nil || c.Reason != ReasonUnschedulable || c.Message != "disk shared is in use by VM first (bound to node n1)" || vm.Status.Node != "" {
		t.Fatalf("want the second VM refused naming the first, got %+v %+v", c, vm)
	}
	// An optical disk is read-only: any number of VMs attach it.
	f.vm("third", "n1", "cd")
	f.vm("fourth", "", "cd")
	f.schedule(t, "fourth")
	if vm, _ := f.lastScheduled(t, "fourth"); vm == nil || vm.Status.Node != "n1" {
		t.Errorf("a VM sharing only an optical disk should be bound: %+v", vm)
	}
}

func TestTwoPendingVMsOnOneDiskGetOneBinding(t *testing.T) {
	f := newFixture(t)
	f.node("n1", "dc1", true, []string{"local", "replicated"})
	f.disk("shared", apps.StorageReplicated, apps.DiskReady, "n1")
	f.vm("a", "", "shared")
	f.vm("b", "", "shared")
	f.schedule(t, "a") // bound; the watch has not shown it yet (assumed)
	f.schedule(t, "b")
	if vm, _ := f.lastScheduled(t, "a"); vm == nil || vm.Status.Node != "n1" {
		t.Fatalf("a: %+v", vm)
	}
	vm, c := f.lastScheduled(t, "b")
	if c == nil || vm.Status.Node != "" || c.Message != "disk shared is in use by VM a (bound to node n1)" {
		t.Errorf("b: want refused naming a, got %+v %+v", c, vm)
	}
}

func TestNewDiskIsPlacedOnAReadyNodeServingItsClassAndImage(t *testing.T) {
	f := newFixture(t)
	f.node("plain", "dc1", true, []string{"local"}, "kumo-tiny")
	f.node("down", "dc2", false, []string{"local", "replicated"}, "kumo-tiny")
	f.node("ceph-noimage", "dc2", true, []string{"local", "replicated"})
	f.node("ceph", "dc3", true, []string{"local", "replicated"}, "kumo-tiny")
	f.disk("root", apps.StorageReplicated, apps.DiskPending, "", func(d *apps.VMDisk) {
		d.Spec.Source.Image = &apps.ImageSource{Name: "kumo-tiny"}
	})
	f.place(t, "root")
	w := f.api.diskWrites(t, "root")
	if len(w) != 1 || w[0].Status.Node != "ceph" {
		t.Fatalf("want the disk placed on ceph, got %+v", w)
	}
	if c := meta.FindStatusCondition(w[0].Status.Conditions, ConditionDiskScheduled); c == nil || c.Status != metav1.ConditionTrue || !strings.Contains(c.Message, "node ceph") {
		t.Errorf("condition %+v", c)
	}
	// No node serves the class: the disk says why, and stays unplaced.
	f.disk("nowhere", apps.StorageReplicated, apps.DiskPending, "", func(d *apps.VMDisk) {
		d.Spec.Source.Image = &apps.ImageSource{Name: "other-image"}
	})
	f.place(t, "nowhere")
	w = f.api.diskWrites(t, "nowhere")
	if len(w) != 1 || w[0].Status.Node != "" {
		t.Fatalf("want one unplaced status, got %+v", w)
	}
	c := meta.FindStatusCondition(w[0].Status.Conditions, ConditionDiskScheduled)
	for _, want := range []string{"no node can prepare the disk", "ceph: lacks golden image other-image", "down: not ready", "plain: lacks storage class replicated"} {
		if c == nil || !strings.Contains(c.Message, want) {
			t.Errorf("condition %+v lacks %q", c, want)
		}
	}
	// Ready, failed and placed disks are left alone.
	f.disk("ready", apps.StorageLocal, apps.DiskReady, "")
	f.disk("failed", apps.StorageLocal, apps.DiskFailed, "")
	f.disk("placed", apps.StorageLocal, apps.DiskPending, "plain")
	for _, d := range []string{"ready", "failed", "placed"} {
		f.place(t, d)
		if w := f.api.diskWrites(t, d); len(w) != 0 {
			t.Errorf("disk %s was written: %+v", d, w)
		}
	}
}

func TestUploadDiskIsPlacedOnlyOnceUploaded(t *testing.T) {
	f := newFixture(t)
	f.node("n1", "dc1", true, []string{"local"})
	up := func(uploaded bool) func(*apps.VMDisk) {
		return func(d *apps.VMDisk) {
			d.Spec.Source.Upload = &apps.UploadSource{}
			if uploaded {
				d.Status.Conditions = []metav1.Condition{{Type: "Uploaded", Status: metav1.ConditionTrue, Reason: "Uploaded"}}
			}
		}
	}
	f.disk("up", apps.StorageLocal, apps.DiskPending, "", up(false))
	f.place(t, "up")
	w := f.api.diskWrites(t, "up")
	if len(w) != 1 || w[0].Status.Node != "" {
		t.Fatalf("want the disk waiting unplaced, got %+v", w)
	}
	if c := meta.FindStatusCondition(w[0].Status.Conditions, ConditionDiskScheduled); c == nil || c.Reason != ReasonWaitingForUpload {
		t.Errorf("condition %+v", c)
	}
	f.vm("web", "", "up")
	f.schedule(t, "web")
	if _, c := f.lastScheduled(t, "web"); c == nil || !strings.Contains(c.Message, "waiting for disk up (waits for its upload: kumo upload vmdisk up --file FILE)") {
		t.Errorf("VM condition %+v", c)
	}
	f.disk("up", apps.StorageLocal, apps.DiskPending, "", up(true))
	f.place(t, "up")
	if w := f.api.diskWrites(t, "up"); w[len(w)-1].Status.Node != "n1" {
		t.Errorf("uploaded disk not placed: %+v", w[len(w)-1].Status)
	}
}

func TestCopyOfALocalDiskIsPlacedOnItsSourcesNode(t *testing.T) {
	f := newFixture(t)
	f.node("n1", "dc1", true, []string{"local"})
	f.node("n2", "dc2", true, []string{"local"})
	f.disk("src", apps.StorageLocal, apps.DiskImporting, "n2", func(d *apps.VMDisk) { d.Status.Progress = "10%" })
	f.disk("copy", apps.StorageLocal, apps.DiskPending, "", func(d *apps.VMDisk) { d.Spec.Source.Disk = &apps.DiskSource{Name: "src"} })
	f.place(t, "copy")
	w := f.api.diskWrites(t, "copy")
	if len(w) != 1 || w[0].Status.Node != "" {
		t.Fatalf("want the copy waiting for its source, got %+v", w)
	}
	if c := meta.FindStatusCondition(w[0].Status.Conditions, ConditionDiskScheduled); c == nil || c.Reason != ReasonWaitingForSource || c.Message != "waits for its source disk src (importing 10%)" {
		t.Errorf("condition %+v", c)
	}
	f.disk("src", apps.StorageLocal, apps.DiskReady, "n2")
	f.place(t, "copy")
	if w := f.api.diskWrites(t, "copy"); w[len(w)-1].Status.Node != "n2" {
		t.Errorf("want the copy on its source's node n2, got %+v", w[len(w)-1].Status)
	}
}

func TestReplicatedDiskFollowsTheVMThatWritesIt(t *testing.T) {
	f := newFixture(t)
	f.node("n1", "dc1", false, []string{"replicated"}) // prepared the disk, now down
	f.node("n2", "dc2", true, []string{"replicated"})
	f.disk("root", apps.StorageReplicated, apps.DiskReady, "n1")
	f.vm("web", "", "root")
	f.schedule(t, "web")
	if vm, _ := f.lastScheduled(t, "web"); vm == nil || vm.Status.Node != "n2" {
		t.Fatalf("want web on n2, got %+v", vm)
	}
	if w := f.api.diskWrites(t, "root"); len(w) != 1 || w[0].Status.Node != "n2" {
		t.Errorf("want the disk's status.node moved to n2 (the node that writes it), got %+v", w)
	}
}

// drain returns the events recorded so far, one per line.
func drain(r record.EventRecorder) string {
	fr := r.(*record.FakeRecorder)
	var out []string
	for {
		select {
		case e := <-fr.Events:
			out = append(out, e)
		case <-time.After(10 * time.Millisecond):
			return strings.Join(out, "\n")
		}
	}
}

func TestLocalDisksSpreadLikeTheirVMsEvenBeforeTheWatchShowsThem(t *testing.T) {
	f := newFixture(t)
	for i, dc := range []string{"dc1", "dc2", "dc3"} {
		f.node(fmt.Sprintf("n%d", i+1), dc, true, []string{"local"})
	}
	f.vm("busy", "n1") // n1 runs a VM already
	seen := map[string]bool{}
	for _, name := range []string{"a", "b"} {
		f.disk(name, apps.StorageLocal, apps.DiskPending, "")
		f.place(t, name) // the fake API does not feed the watch: placements are assumed
		w := f.api.diskWrites(t, name)
		if len(w) != 1 {
			t.Fatalf("disk %s: %+v", name, w)
		}
		seen[w[0].Status.Node] = true
	}
	if !seen["n2"] || !seen["n3"] {
		t.Errorf("two local disks should go to the two idle nodes n2 and n3, got %v", seen)
	}
}

func TestBindingsNotYetInTheWatchStillCountAgainstTheNode(t *testing.T) {
	f := newFixture(t)
	f.node("n1", "dc1", true, []string{"local"})
	obj, _, _ := f.inf.Nodes.GetStore().GetByKey("n1")
	n := obj.(*kumo.Node).DeepCopy()
	n.Status.Allocatable = map[string]resource.Quantity{"cpu": resource.MustParse("2"), "memory": resource.MustParse("32Gi"), kumo.ResourceLocalStorage: resource.MustParse("1Ti")}
	f.inf.Nodes.GetStore().Update(n)
	for _, name := range []string{"a", "b", "c"} {
		f.vm(name, "")
		f.schedule(t, name) // the fake API never feeds the watch: a and b stay assumed
	}
	for _, name := range []string{"a", "b"} {
		if vm, _ := f.lastScheduled(t, name); vm == nil || vm.Status.Node != "n1" {
			t.Errorf("%s: want bound to n1, got %+v", name, vm)
		}
	}
	vm, c := f.lastScheduled(t, "c")
	if c == nil || vm.Status.Node != "" || !strings.Contains(c.Message, "no node has 1 vCPU / 1Gi free (n1: 0 vCPU / 30Gi free)") {
		t.Errorf("c: want unschedulable on the full node, got %+v %+v", c, vm)
	}
	// The watch catches up (a is bound, incarnation 1): the assumption gives way to the object.
	a, _ := f.lastScheduled(t, "a")
	f.inf.VMs.GetStore().Update(a)
	if free := f.ctl.nodes()[0].Free(); free.CPUs != 0 {
		t.Errorf("after the watch caught up n1 has %d vCPU free, want 0 (a counted once, b still assumed)", free.CPUs)
	}
}

// Local disks spread, but a VM runs on the node of all its local disks: a new local disk of a VM
// whose other local disk is placed already must go to that node, or the VM never runs.
func TestLocalDiskOfAVMGoesToTheNodeOfItsOtherLocalDisks(t *testing.T) {
	f := newFixture(t)
	f.node("n1", "dc1", true, []string{"local"})
	f.node("n2", "dc2", true, []string{"local"})
	f.vm("web", "", "root", "data")
	f.disk("root", apps.StorageLocal, apps.DiskPending, "")
	f.disk("data", apps.StorageLocal, apps.DiskPending, "")
	f.place(t, "root") // the fake API does not feed the watch: the placement is assumed
	root := f.api.diskWrites(t, "root")
	if len(root) != 1 || root[0].Status.Node == "" {
		t.Fatalf("root not placed: %+v", root)
	}
	f.place(t, "data")
	data := f.api.diskWrites(t, "data")
	if len(data) != 1 || data[0].Status.Node != root[0].Status.Node {
		t.Fatalf("data placed on %+v, root on %s: VM web could never run", data, root[0].Status.Node)
	}

	// Pinned to a node that cannot prepare it, the disk waits and says why.
	f.node("n3", "dc3", true, []string{"local"})
	f.disk("logs", apps.StorageLocal, apps.DiskPending, "")
	f.disk("root", apps.StorageLocal, apps.DiskReady, "n3")
	f.vm("db", "", "root2", "logs")
	f.disk("root2", apps.StorageLocal, apps.DiskReady, "n1")
	f.inf.Nodes.GetStore().Delete(&kumo.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1"}})
	f.place(t, "logs")
	w := f.api.diskWrites(t, "logs")
	if len(w) != 1 || w[0].Status.Node != "" {
		t.Fatalf("want logs waiting for node n1, got %+v", w)
	}
	if c := meta.FindStatusCondition(w[0].Status.Conditions, ConditionDiskScheduled); c == nil || !strings.Contains(c.Message, "disk root2 of VM db lives on node n1") {
		t.Errorf("condition %+v", c)
	}
}

// qemu-img cannot read a local disk a running QEMU holds (its write lock): a copy placed then
// failed for good. It waits for the VM to stop.
func TestCopyOfALocalDiskWaitsWhileAVMRunsOnItsSource(t *testing.T) {
	f := newFixture(t)
	f.node("n1", "dc1", true, []string{"local"})
	f.disk("src", apps.StorageLocal, apps.DiskReady, "n1")
	f.vm("web", "n1", "src")
	f.disk("copy", apps.StorageLocal, apps.DiskPending, "", func(d *apps.VMDisk) { d.Spec.Source.Disk = &apps.DiskSource{Name: "src"} })
	f.place(t, "copy")
	w := f.api.diskWrites(t, "copy")
	if len(w) != 1 || w[0].Status.Node != "" {
		t.Fatalf("want the copy waiting, got %+v", w)
	}
	if c := meta.FindStatusCondition(w[0].Status.Conditions, ConditionDiskScheduled); c == nil || c.Reason != ReasonWaitingForSource || !strings.Contains(c.Message, "VM web") {
		t.Errorf("condition %+v", c)
	}
	stopped := f.vm("web", "", "src")
	stopped.Status.Phase = apps.VMStopped
	f.place(t, "copy")
	if w := f.api.diskWrites(t, "copy"); w[len(w)-1].Status.Node != "n1" {
		t.Errorf("want the copy placed on n1 once the VM stopped, got %+v", w[len(w)-1].Status)
	}
}

// A VM waiting for a disk whose preparation failed for a passing reason says so, with the error:
// the user sees why the wait is long, and that the node tries again.
func TestVMWaitingForADiskBeingRetriedSaysSo(t *testing.T) {
	f := newFixture(t)
	f.node("n1", "dc1", true, []string{"local"})
	f.disk("data", apps.StorageLocal, apps.DiskImporting, "n1", func(d *apps.VMDisk) {
		d.Status.Progress = "40%"
		d.Status.Conditions = []metav1.Condition{{Type: "Ready", Status: metav1.ConditionFalse, Reason: "PrepareRetrying", Message: "rbd clone: exit status 110: connection timed out"}}
	})
	f.vm("web", "", "data")
	f.schedule(t, "web")
	vm, c := f.lastScheduled(t, "web")
	if c == nil || c.Reason != ReasonWaitingForDisk || c.Message != "waiting for disk data (preparing on node n1 failed, retrying: rbd clone: exit status 110: connection timed out)" {
		t.Fatalf("want the VM waiting for disk data naming the retried error, got %+v", c)
	}
	if vm.Status.Node != "" {
		t.Errorf("a VM whose disk is not prepared was bound to %s", vm.Status.Node)
	}
}
