// Package scheduler binds each VMInstance that should run to a node: it filters nodes by what the
// VM needs (free vCPU and memory, which are guaranteed, never overcommitted; the node its local
// disks live on; disks that are ready and used by no other bound VM) and scores the rest to spread
// VMs across datacenters and then across nodes. A binding is a new incarnation of the VM on
// exactly one node. It also places every new VMDisk on the node that prepares it (for a local
// disk, the node that holds it and runs its VMs).
package scheduler

import (
	"fmt"
	"sort"
	"strings"

	"k8s.io/apimachinery/pkg/api/resource"
)

// Resources is an amount of vCPU and memory.
type Resources struct {
	CPUs   int64
	Memory int64 // bytes
}

func (r Resources) String() string {
	return fmt.Sprintf("%d vCPU / %s", r.CPUs, resource.NewQuantity(r.Memory, resource.BinarySI).String())
}

// Fits says whether r fits in free (nothing always fits).
func (r Resources) Fits(free Resources) bool {
	return r == Resources{} || (r.CPUs <= free.CPUs && r.Memory <= free.Memory)
}

// Node is what placement knows of a node.
type Node struct {
	Name        string
	Datacenter  string
	Ready       bool
	Schedulable bool
	Allocatable Resources
	// Used is the sum of the instance types bound to the node.
	Used Resources
	// VMs counts VMs bound to the node.
	VMs int
	// Disks counts local disks placed on the node (they bring their VMs with them).
	Disks  int
	Images map[string]bool
	// StorageClasses the node can open.
	StorageClasses map[string]bool
	// LocalStorage is the bytes local disks may take on the node (its allocatable
	// "local-storage"; -1 when the node does not report it); LocalUsed sums the spec.storage of
	// the local disks placed on it.
	LocalStorage, LocalUsed int64
}

// LocalFree is the bytes of local disks the node can still hold.
func (n Node) LocalFree() int64 { return n.LocalStorage - n.LocalUsed }

// Free is what the node can still guarantee.
func (n Node) Free() Resources {
	return Resources{CPUs: n.Allocatable.CPUs - n.Used.CPUs, Memory: n.Allocatable.Memory - n.Used.Memory}
}

// Request is what one VM needs.
type Request struct {
	Resources Resources
	// Node, when set, is the only node the VM may run on (its local disks live there).
	Node string
	// NodeBy says, for a disk, what pins it to Node ("" : its source disk).
	NodeBy string
	// Images are golden images the node must hold (to create the VM's local disks).
	Images []string
	// StorageClasses the VM's disks need.
	StorageClasses []string
	// LocalBytes is the size of a local disk to place: the node must have that much local
	// storage free.
	LocalBytes int64
}

// Reasons of an Unschedulable (the reason of the VM's or disk's Scheduled condition).
const (
	// ReasonUnschedulable: nothing will change without a change elsewhere (a node, a spec).
	ReasonUnschedulable = "Unschedulable"
	// ReasonWaitingForDisk: a VM waits for its disks to be prepared.
	ReasonWaitingForDisk = "WaitingForDisk"
	// ReasonWaitingForUpload: a disk waits for its upload before a node prepares it.
	ReasonWaitingForUpload = "WaitingForUpload"
	// ReasonWaitingForSource: a disk waits for the disk it is copied from to be ready.
	ReasonWaitingForSource = "WaitingForSourceDisk"
	// ReasonImageNotFound: a disk's golden image does not exist (on no node, no GoldenImage).
	ReasonImageNotFound = "ImageNotFound"
)

// Unschedulable explains why no node fits, or what the object waits for.
type Unschedulable struct {
	// Reason is one of the Reason constants; empty means ReasonUnschedulable.
	Reason  string
	Message string
}

func (u *Unschedulable) Error() string { return u.Message }

func (u *Unschedulable) reason() string {
	if u.Reason == "" {
		return ReasonUnschedulable
	}
	return u.Reason
}

// Place picks the node for req, or returns *Unschedulable saying why none fits. Among the nodes
// that fit it prefers the datacenter with the fewest VMs, then the node with the fewest VMs, then
// the most free memory, then the name (so the choice is deterministic).
func Place(req Request, nodes []Node) (Node, error) {
	return place(req, nodes, func(n Node) int { return n.VMs }, fmt.Sprintf("no node has %s free", req.Resources),
		fmt.Sprintf("its local disks bind it to node %s, which cannot take it", req.Node),
		fmt.Sprintf("its local disks are on node %s, which is not registered", req.Node))
}

// PlaceDisk picks the node that prepares a disk (and, for a local disk, holds it for good):
// a ready, schedulable node serving its storage classes and holding the golden images it is
// made from; req.Resources is ignored. It ranks nodes like Place, counting the local disks
// already placed as well as the VMs, so that local disks (and the VMs that follow them) spread.
func PlaceDisk(req Request, nodes []Node) (Node, error) {
	req.Resources = Resources{}
	by := req.NodeBy
	if by == "" {
		by = "its source disk"
	}
	return place(req, nodes, func(n Node) int { return n.VMs + n.Disks }, "no node can prepare the disk",
		fmt.Sprintf("%s lives on node %s, which cannot prepare it", by, req.Node),
		fmt.Sprintf("%s lives on node %s, which is not registered", by, req.Node))
}

// place filters nodes for req and ranks the rest by load (lowest first, per datacenter then per
// node); the messages explain an empty result.
func place(req Request, nodes []Node, load func(Node) int, noneFits, pinnedCannot, pinnedMissing string) (Node, error) {
	if len(nodes) == 0 {
		return Node{}, &Unschedulable{Message: "no node has registered"}
	}
	perDC := map[string]int{}
	for _, n := range nodes {
		perDC[n.Datacenter] += load(n)
	}
	var fit []Node
	var why []string
	// causes are the summaries of why nodes do not fit, so the message leads with the real
	// reason ("no node holds golden image x") rather than a resource shortage no node has.
	causes := map[string]bool{}
	for _, n := range nodes {
		switch {
		case req.Node != "" && n.Name != req.Node:
			continue
		case !n.Ready:
			why = append(why, n.Name+": not ready")
			causes["no node is ready"] = true
		case !n.Schedulable:
			why = append(why, n.Name+": unschedulable")
			causes["no node is schedulable"] = true
		case missing(n.StorageClasses, req.StorageClasses) != "":
			c := missing(n.StorageClasses, req.StorageClasses)
			why = append(why, fmt.Sprintf("%s: lacks storage class %s", n.Name, c))
			causes["no node serves storage class "+c] = true
		case !hasImages(n, req.Images):
			why = append(why, fmt.Sprintf("%s: lacks golden image %s", n.Name, strings.Join(req.Images, ", ")))
			causes["no node holds golden image "+strings.Join(req.Images, ", ")] = true
		case req.LocalBytes > 0 && n.LocalStorage < 0:
			why = append(why, n.Name+": reports no local storage capacity")
			causes["no node reports its local storage"] = true
		case req.LocalBytes > n.LocalFree():
			why = append(why, fmt.Sprintf("%s: %s of local storage free, the disk needs %s", n.Name, bytesString(max(n.LocalFree(), 0)), bytesString(req.LocalBytes)))
			causes["no node has room for the local disk"] = true
		case !req.Resources.Fits(n.Free()):
			why = append(why, fmt.Sprintf("%s: %s free", n.Name, n.Free()))
			causes[noneFits] = true
		default:
			fit = append(fit, n)
		}
	}
	if len(fit) == 0 {
		if req.Node != "" && len(why) == 0 {
			return Node{}, &Unschedulable{Message: pinnedMissing}
		}
		prefix := noneFits
		switch {
		case req.Node != "":
			prefix = pinnedCannot
		case len(causes) == 1:
			for c := range causes {
				prefix = c
			}
		case !causes[noneFits] && req.Resources != (Resources{}):
			prefix = "no node fits"
		}
		sort.Strings(why)
		return Node{}, &Unschedulable{Message: prefix + " (" + strings.Join(why, "; ") + ")"}
	}
	sort.Slice(fit, func(i, j int) bool {
		a, b := fit[i], fit[j]
		if perDC[a.Datacenter] != perDC[b.Datacenter] {
			return perDC[a.Datacenter] < perDC[b.Datacenter]
		}
		if la, lb := load(a), load(b); la != lb {
			return la < lb
		}
		if fa, fb := a.Free().Memory, b.Free().Memory; fa != fb {
			return fa > fb
		}
		return a.Name < b.Name
	})
	return fit[0], nil
}

// missing returns the first wanted class the node lacks, or "".
func missing(have map[string]bool, want []string) string {
	for _, c := range want {
		if !have[c] {
			return c
		}
	}
	return ""
}

func hasImages(n Node, images []string) bool {
	for _, img := range images {
		if !n.Images[img] {
			return false
		}
	}
	return true
}

func bytesString(n int64) string { return resource.NewQuantity(n, resource.BinarySI).String() }
