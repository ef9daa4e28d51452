package scheduler

import (
	"errors"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	apps "kumo.dev/kumo/pkg/apis/apps/v1alpha1"
	kumo "kumo.dev/kumo/pkg/apis/kumo/v1alpha1"
)

func TestLocalDiskGoesOnlyToANodeWithRoomForIt(t *testing.T) {
	full, roomy := node("full", "dc1", 8, 32), node("roomy", "dc2", 8, 32)
	full.LocalStorage, full.LocalUsed = 100*gi, 95*gi
	roomy.LocalStorage, roomy.VMs = 100*gi, 5 // busier, but the only one with room
	n, err := PlaceDisk(Request{LocalBytes: 10 * gi, StorageClasses: []string{"local"}}, []Node{full, roomy})
	if err != nil || n.Name != "roomy" {
		t.Fatalf("want the disk on roomy, got %v, %v", n.Name, err)
	}
	_, err = PlaceDisk(Request{LocalBytes: 10 * gi, StorageClasses: []string{"local"}}, []Node{full})
	var u *Unschedulable
	if !errors.As(err, &u) || !strings.Contains(u.Message, "full: 5Gi of local storage free, the disk needs 10Gi") {
		t.Fatalf("want Unschedulable naming the node's free local storage, got %v", err)
	}
	// A node that does not report its local storage is not taken for empty.
	unknown := node("unknown", "dc1", 8, 32)
	unknown.LocalStorage = -1
	if _, err := PlaceDisk(Request{LocalBytes: gi, StorageClasses: []string{"local"}}, []Node{unknown}); !errors.As(err, &u) || !strings.Contains(u.Message, "reports no local storage capacity") {
		t.Fatalf("want Unschedulable for a node without local storage capacity, got %v", err)
	}
}

func TestLocalDisksPlacedOnANodeCountAgainstItsLocalStorage(t *testing.T) {
	f := newFixture(t)
	f.node("n1", "dc1", true, []string{"local"})
	obj, _, _ := f.inf.Nodes.GetStore().GetByKey("n1")
	n := obj.(*kumo.Node).DeepCopy()
	n.Status.Allocatable[kumo.ResourceLocalStorage] = resource.MustParse("20Gi")
	_ = f.inf.Nodes.GetStore().Update(n)
	size := func(s string) func(*apps.VMDisk) {
		return func(d *apps.VMDisk) { q := resource.MustParse(s); d.Spec.Storage = &q }
	}
	f.disk("old", apps.StorageLocal, apps.DiskReady, "n1", size("15Gi"))
	f.disk("replica", apps.StorageReplicated, apps.DiskReady, "n1", size("100Gi")) // not on the node's disk
	f.disk("new", apps.StorageLocal, apps.DiskPending, "", size("10Gi"))
	f.place(t, "new")
	w := f.api.diskWrites(t, "new")
	if len(w) != 1 || w[0].Status.Node != "" {
		t.Fatalf("a 10Gi disk on a node with 5Gi left was placed: %+v", w)
	}
	c := meta.FindStatusCondition(w[0].Status.Conditions, ConditionDiskScheduled)
	if c == nil || c.Status != metav1.ConditionFalse || !strings.Contains(c.Message, "n1: 5Gi of local storage free, the disk needs 10Gi") {
		t.Fatalf("want the disk unschedulable naming n1's free local storage, got %+v", c)
	}
	f.disk("small", apps.StorageLocal, apps.DiskPending, "", size("4Gi"))
	f.place(t, "small")
	if w := f.api.diskWrites(t, "small"); len(w) != 1 || w[0].Status.Node != "n1" {
		t.Fatalf("a 4Gi disk fits in 5Gi: %+v", w)
	}
}
