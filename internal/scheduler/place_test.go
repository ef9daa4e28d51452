package scheduler

import (
	"errors"
	"strings"
	"testing"
)

const gi = int64(1) << 30

func node(name, dc string, cpus, memGi int64) Node {
	return Node{Name: name, Datacenter: dc, Ready: true, Schedulable: true,
		Allocatable: Resources{CPUs: cpus, Memory: memGi * gi}, Images: map[string]bool{"kumo-tiny": true},
		StorageClasses: map[string]bool{"local": true}}
}

func TestPlaceSpreadsAcrossDatacentersThenNodes(t *testing.T) {
	nodes := []Node{node("a1", "dc1", 8, 32), node("a2", "dc1", 8, 32), node("b1", "dc2", 8, 32), node("c1", "dc3", 8, 32)}
	req := Request{Resources: Resources{CPUs: 1, Memory: 4 * gi}}
	perDC := map[string]int{}
	for i := 0; i < 6; i++ {
		n, err := Place(req, nodes)
		if err != nil {
			t.Fatal(err)
		}
		perDC[n.Datacenter]++
		for j := range nodes {
			if nodes[j].Name == n.Name {
				nodes[j].VMs++
				nodes[j].Used.CPUs += req.Resources.CPUs
				nodes[j].Used.Memory += req.Resources.Memory
			}
		}
	}
	if perDC["dc1"] != 2 || perDC["dc2"] != 2 || perDC["dc3"] != 2 {
		t.Errorf("6 VMs over 3 datacenters: %v", perDC)
	}
	if nodes[0].VMs != 1 || nodes[1].VMs != 1 {
		t.Errorf("within dc1 the two nodes should get one VM each: a1=%d a2=%d", nodes[0].VMs, nodes[1].VMs)
	}
}

func TestPlaceNeverOvercommits(t *testing.T) {
	n := node("n1", "dc1", 4, 16)
	n.Used = Resources{CPUs: 3, Memory: 8 * gi}
	_, err := Place(Request{Resources: Resources{CPUs: 2, Memory: 4 * gi}}, []Node{n})
	var u *Unschedulable
	if !errors.As(err, &u) {
		t.Fatalf("want Unschedulable, got %v", err)
	}
	if !strings.Contains(u.Message, "no node has 2 vCPU / 4Gi free") || !strings.Contains(u.Message, "n1: 1 vCPU / 8Gi free") {
		t.Errorf("message %q", u.Message)
	}
	if _, err := Place(Request{Resources: Resources{CPUs: 1, Memory: 8 * gi}}, []Node{n}); err != nil {
		t.Errorf("an exact fit is refused: %v", err)
	}
}

func TestPlaceExplainsEveryRejectedNode(t *testing.T) {
	notReady, cordoned, noImage := node("a", "dc1", 8, 8), node("b", "dc1", 8, 8), node("c", "dc2", 8, 8)
	notReady.Ready = false
	cordoned.Schedulable = false
	noImage.Images = nil
	_, err := Place(Request{Resources: Resources{CPUs: 1, Memory: gi}, Images: []string{"kumo-tiny"}}, []Node{notReady, cordoned, noImage})
	if err == nil {
		t.Fatal("placed on a node that cannot take it")
	}
	for _, want := range []string{"a: not ready", "b: unschedulable", "c: lacks golden image kumo-tiny"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("message %q lacks %q", err, want)
		}
	}
	if _, err := Place(Request{}, nil); err == nil || !strings.Contains(err.Error(), "no node has registered") {
		t.Errorf("no nodes: %v", err)
	}
}

func TestPlaceKeepsLocalDisksOnTheirNode(t *testing.T) {
	nodes := []Node{node("a", "dc1", 8, 32), node("b", "dc2", 8, 32)}
	nodes[1].VMs = 5
	n, err := Place(Request{Resources: Resources{CPUs: 1, Memory: gi}, Node: "b"}, nodes)
	if err != nil || n.Name != "b" {
		t.Fatalf("want node b, got %q %v", n.Name, err)
	}
	nodes[1].Used = nodes[1].Allocatable
	if _, err := Place(Request{Resources: Resources{CPUs: 1, Memory: gi}, Node: "b"}, nodes); err == nil || !strings.Contains(err.Error(), "bind it to node b") {
		t.Errorf("full disk node: %v", err)
	}
	if _, err := Place(Request{Resources: Resources{CPUs: 1, Memory: gi}, Node: "gone"}, nodes); err == nil || !strings.Contains(err.Error(), "not registered") {
		t.Errorf("missing disk node: %v", err)
	}
}

func TestPlaceNeedsTheDisksStorageClasses(t *testing.T) {
	withCeph := node("ceph", "dc2", 8, 32)
	withCeph.StorageClasses["replicated"] = true
	withCeph.VMs = 10
	n, err := Place(Request{Resources: Resources{CPUs: 1, Memory: gi}, StorageClasses: []string{"replicated"}}, []Node{node("plain", "dc1", 8, 32), withCeph})
	if err != nil || n.Name != "ceph" {
		t.Fatalf("want the node with Ceph, got %q %v", n.Name, err)
	}
	_, err = Place(Request{Resources: Resources{CPUs: 1, Memory: gi}, StorageClasses: []string{"replicated"}}, []Node{node("plain", "dc1", 8, 32)})
	if err == nil || !strings.Contains(err.Error(), "plain: lacks storage class replicated") {
		t.Errorf("no node with Ceph: %v", err)
	}
}

func TestSchedulingMessageLeadsWithTheRealReason(t *testing.T) {
	nodes := []Node{
		{Name: "n1", Datacenter: "dc1", Ready: true, Schedulable: true, StorageClasses: map[string]bool{"local": true},
			Allocatable: Resources{CPUs: 8, Memory: 16 << 30}},
	}
	_, err := Place(Request{Resources: Resources{CPUs: 1, Memory: 4 << 30}, Images: []string{"kumo-tiny"}}, nodes)
	if err == nil || !strings.HasPrefix(err.Error(), "no node holds golden image kumo-tiny (") {
		t.Errorf("a missing image with plenty of room: %v, want the image first", err)
	}
	_, err = Place(Request{Resources: Resources{CPUs: 16, Memory: 4 << 30}}, nodes)
	if err == nil || !strings.HasPrefix(err.Error(), "no node has 16 vCPU") {
		t.Errorf("too big a VM: %v", err)
	}
}
