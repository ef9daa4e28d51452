package apiserver

import (
	"context"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apiserver/pkg/admission"

	apps "kumo.dev/kumo/pkg/apis/apps/v1alpha1"
	kumo "kumo.dev/kumo/pkg/apis/kumo/v1alpha1"
)

func placedOn(node string) func(*apps.VMDisk) {
	return func(d *apps.VMDisk) { d.Status.Node = node }
}

func boundTo(vm *apps.VMInstance, node string) *apps.VMInstance {
	vm.Status.Node = node
	return vm
}

// The reproduction of issue 9 item 2: a node that runs nothing PATCHes another tenant's disk
// status to {"node": itself} (then received the disk key), or rewrites a replicated disk's status.
func TestNodeMayNotPlaceOrRewriteDisksOfOthers(t *testing.T) {
	a := newWorld().admission()
	status := func(obj, old *apps.VMDisk) error {
		return a.Validate(context.Background(), attrs(admission.Update, apps.Resource("vmdisks"), testNS, "d", "status", obj, old, node1), nil)
	}
	if err := status(disk("d", placedOn("n1")), disk("d", placedOn("n2"))); !apierrors.IsForbidden(err) {
		t.Errorf("n1 moving n2's disk to itself: want 403, got %v", err)
	}
	if err := status(disk("d", placedOn("n1")), disk("d")); !apierrors.IsForbidden(err) {
		t.Errorf("n1 placing an unplaced disk on itself: want 403, got %v", err)
	}
	grown := disk("d", placedOn("n2"), func(d *apps.VMDisk) {
		d.Status.Phase, d.Status.Size = apps.DiskReady, resource.NewQuantity(1<<40, resource.BinarySI)
	})
	if err := status(grown, disk("d", placedOn("n2"))); !apierrors.IsForbidden(err) {
		t.Errorf("n1 rewriting the status of a disk on n2 (Ready, 1Ti): want 403, got %v", err)
	}
	if err := status(disk("d", placedOn("")), disk("d", placedOn("n1"))); !apierrors.IsForbidden(err) {
		t.Errorf("n1 unplacing its disk: want 403, got %v", err)
	}
	ready := disk("d", placedOn("n1"), func(d *apps.VMDisk) { d.Status.Phase = apps.DiskReady })
	if err := status(ready, disk("d", placedOn("n1"))); err != nil {
		t.Errorf("n1 reporting its own disk Ready: %v", err)
	}
}

func TestNodeReadsOnlyDisksPlacedOnItOrUsedByItsVMs(t *testing.T) {
	w := newWorld()
	w.vms.objs = []runtime.Object{boundTo(vmUsing("web", "shared-iso", "root"), "n1"), boundTo(vmUsing("db", "dbroot"), "n2")}
	w.disks.objs = []runtime.Object{
		disk("mine", placedOn("n1")), disk("root", placedOn("n1")), disk("shared-iso", optical, placedOn("n2")),
		disk("dbroot", placedOn("n2")), disk("golden-src", placedOn("n2")),
		disk("clone", placedOn("n1"), func(d *apps.VMDisk) { d.Spec.Source.Disk = &apps.DiskSource{Name: "golden-src"} }),
		disk("unplaced"),
	}
	l := w.lookups()
	for _, name := range []string{"mine", "root", "shared-iso", "golden-src"} {
		d, _ := w.disks.Get(ctxIn(testNS), name, nil)
		if err := l.nodeMayReadDisk(ctxIn(testNS), "n1", d.(*apps.VMDisk)); err != nil {
			t.Errorf("n1 reading disk %s: %v", name, err)
		}
	}
	for _, name := range []string{"dbroot", "unplaced"} {
		d, _ := w.disks.Get(ctxIn(testNS), name, nil)
		if err := l.nodeMayReadDisk(ctxIn(testNS), "n1", d.(*apps.VMDisk)); !apierrors.IsForbidden(err) {
			t.Errorf("n1 reading disk %s of another node: want 403, got %v", name, err)
		}
	}
	w.vms.err = apierrors.NewServiceUnavailable("etcd down")
	d, _ := w.disks.Get(ctxIn(testNS), "dbroot", nil)
	if err := l.nodeMayReadDisk(ctxIn(testNS), "n1", d.(*apps.VMDisk)); err == nil || apierrors.IsForbidden(err) {
		t.Errorf("an unreadable VM list is neither a yes nor a no: got %v", err)
	}
}

func TestNodeReadsOnlyTheUploadOfADiskPlacedOnIt(t *testing.T) {
	u := diskUploads(nil, nil, t.TempDir())
	if err := u.nodeMayRead(disk("up", placedOn("n1")), "n1"); err != nil {
		t.Errorf("n1 reading the upload of its disk: %v", err)
	}
	for _, on := range []string{"n2", ""} {
		if err := u.nodeMayRead(disk("up", placedOn(on)), "n1"); err == nil {
			t.Errorf("n1 reading the upload of a disk placed on %q: want a refusal", on)
		}
	}
}

func TestNodeReportsOnlyUndecidedGoldenImageImports(t *testing.T) {
	a := newWorld().admission()
	image := func(phase kumo.GoldenImagePhase, upload bool) *kumo.GoldenImage {
		g := &kumo.GoldenImage{ObjectMeta: metav1.ObjectMeta{Name: "debian"}, Status: kumo.GoldenImageStatus{Phase: phase}}
		if upload {
			g.Spec.Source.Upload = &kumo.GoldenImageUpload{}
		} else {
			g.Spec.Source.HTTP = &kumo.GoldenImageHTTP{URL: "http://images.example/debian.qcow2"}
		}
		return g
	}
	status := func(obj, old *kumo.GoldenImage) error {
		return a.Validate(context.Background(), attrs(admission.Update, kumo.Resource("goldenimages"), "", "debian", "status", obj, old, node1), nil)
	}
	if err := status(image(kumo.GoldenImageReady, false), image(kumo.GoldenImagePending, false)); err != nil {
		t.Errorf("n1 reporting a pending import Ready: %v", err)
	}
	if err := status(image(kumo.GoldenImageFailed, false), image(kumo.GoldenImagePending, false)); err != nil {
		t.Errorf("n1 reporting a pending import refused: %v", err)
	}
	if err := status(image(kumo.GoldenImageFailed, false), image(kumo.GoldenImageReady, false)); !apierrors.IsForbidden(err) {
		t.Errorf("n1 marking a Ready image Failed (agents would skip it): want 403, got %v", err)
	}
	if err := status(image(kumo.GoldenImageReady, false), image(kumo.GoldenImageFailed, false)); !apierrors.IsForbidden(err) {
		t.Errorf("n1 reviving a Failed image: want 403, got %v", err)
	}
	if err := status(image(kumo.GoldenImageFailed, true), image(kumo.GoldenImagePending, true)); !apierrors.IsForbidden(err) {
		t.Errorf("n1 writing the status of an uploaded image: want 403, got %v", err)
	}
	if err := status(image(kumo.GoldenImageImporting, false), image(kumo.GoldenImagePending, false)); !apierrors.IsForbidden(err) {
		t.Errorf("n1 writing a phase other than Ready or Failed: want 403, got %v", err)
	}
}

func TestNodeRecordsEventsOnlyAboutItsOwnObjects(t *testing.T) {
	w := newWorld()
	const foreign = "tenant-beta"
	w.vms.objs = []runtime.Object{boundTo(vmUsing("web", "root"), "n1")}
	other := disk("theirs", placedOn("n2"))
	other.Namespace = foreign
	w.disks.objs = []runtime.Object{disk("root", placedOn("n1")), other}
	a := w.admission()
	event := func(ns, kind, objNS, name string) *corev1.Event {
		return &corev1.Event{ObjectMeta: metav1.ObjectMeta{Name: name + ".1", Namespace: ns}, Type: corev1.EventTypeWarning, Reason: "PrepareFailed",
			InvolvedObject: corev1.ObjectReference{APIVersion: apps.SchemeGroupVersion.String(), Kind: kind, Namespace: objNS, Name: name}}
	}
	record := func(op admission.Operation, ev *corev1.Event) error {
		return a.Validate(context.Background(), attrs(op, coreResource("events"), ev.Namespace, ev.Name, "", ev, nil, node1), nil)
	}
	for what, ev := range map[string]*corev1.Event{
		"about its disk": event(testNS, "VMDisk", testNS, "root"),
		"about its VM":   event(testNS, "VMInstance", testNS, "web"),
	} {
		if err := record(admission.Create, ev); err != nil {
			t.Errorf("n1 recording an event %s: %v", what, err)
		}
		if err := record(admission.Update, ev); err != nil {
			t.Errorf("n1 updating an event %s: %v", what, err)
		}
	}
	for what, ev := range map[string]*corev1.Event{
		"about another tenant's disk":          event(foreign, "VMDisk", foreign, "theirs"),
		"in another tenant about its own disk": event(foreign, "VMDisk", testNS, "root"),
		"about a VM it does not run":           event(foreign, "VMInstance", foreign, "web"),
		"about a disk that does not exist":     event(testNS, "VMDisk", testNS, "nothing"),
		"about a tenant":                       {ObjectMeta: metav1.ObjectMeta{Name: "x", Namespace: "default"}, InvolvedObject: corev1.ObjectReference{APIVersion: "kumo.dev/v1alpha1", Kind: "Tenant", Name: "beta"}},
	} {
		if err := record(admission.Create, ev); !apierrors.IsForbidden(err) {
			t.Errorf("n1 recording an event %s: want 403, got %v", what, err)
		}
		if err := record(admission.Update, ev); !apierrors.IsForbidden(err) {
			t.Errorf("n1 updating an event %s: want 403, got %v", what, err)
		}
	}
	if err := a.Validate(context.Background(), attrs(admission.Update, coreResource("events"), foreign, "x", "", event(foreign, "VMDisk", foreign, "theirs"), nil, admin), nil); err != nil {
		t.Errorf("an admin recording any event: %v", err)
	}
}
