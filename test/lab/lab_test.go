package lab_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"kumo.dev/kumo/internal/lab"
	apps "kumo.dev/kumo/pkg/apis/apps/v1alpha1"
)

// State shared by the tests, in file order: the tenant and its VMs, one per datacenter.
var (
	tenantKC string
	tenantNS = "tenant-labt"
	vmByDC   = map[string]string{} // datacenter -> VM name
)

func TestLabComesUpWithEveryServerAndNodeReady(t *testing.T) {
	s := needLab(t)
	ctx := context.Background()
	t.Logf("lab up in %v", labUpTime.Round(100*time.Millisecond))
	if len(s.Datacenters) != 3 || len(s.Nodes) != 6 {
		t.Fatalf("lab has %d datacenters and %d nodes, want 3 and 6", len(s.Datacenters), len(s.Nodes))
	}
	for _, dc := range s.Datacenters {
		if dc.Server == nil {
			if s.ReplicatedCP {
				t.Errorf("datacenter %s runs no server", dc.Name)
			}
			continue
		}
		if err := lab.Readyz(ctx, s.Kubeconfig, dc.URL); err != nil {
			t.Errorf("server of %s: %v", dc.Name, err)
		}
	}
	if !s.ReplicatedCP {
		t.Errorf("kumod has no replicated control plane (--etcd-initial-cluster): the lab runs one server")
	}
	if err := lab.WaitNodesReady(ctx, s, 30*time.Second); err != nil {
		t.Error(err)
	}
	if err := lab.WaitCephHealthy(ctx, s, 2*time.Minute); err != nil {
		t.Error(err)
	}
	// Each Ceph daemon runs in its datacenter's namespace, bound to its address.
	out, err := s.Ceph(ctx, "mon", "dump", "-f", "json")
	if err != nil {
		t.Fatal(err)
	}
	for _, dc := range s.Datacenters {
		if !strings.Contains(out, dc.Address+":3300") {
			t.Errorf("no monitor of %s at %s:3300 in %s", dc.Name, dc.Address, out)
		}
	}
}

func TestTrafficStaysInsideTheLab(t *testing.T) {
	s := needLab(t)
	routes, err := netlink.RouteList(nil, netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	_, subnet, _ := net.ParseCIDR(s.Subnet)
	_, external, _ := net.ParseCIDR(s.External)
	var labRoutes int
	for _, r := range routes {
		if r.Dst == nil {
			continue
		}
		if ones, _ := r.Dst.Mask.Size(); ones == 0 {
			continue // the default route
		}
		if !subnet.Contains(r.Dst.IP) && !r.Dst.Contains(subnet.IP) && !external.Contains(r.Dst.IP) && !r.Dst.Contains(external.IP) {
			continue
		}
		link, _ := netlink.LinkByIndex(r.LinkIndex)
		name := ""
		if link != nil {
			name = link.Attrs().Name
		}
		if r.Dst.String() == subnet.String() && name == lab.HostLink && r.Gw == nil {
			labRoutes++
			continue
		}
		if r.Dst.Contains(subnet.IP) && r.Dst.String() != subnet.String() && name != lab.HostLink {
			continue // a wider route (e.g. a default route) is not a lab route
		}
		t.Errorf("host route %v via %v dev %s leads lab addresses outside the lab's veth", r.Dst, r.Gw, name)
	}
	if labRoutes != 1 {
		t.Errorf("host has %d connected routes to %s on %s, want exactly 1", labRoutes, s.Subnet, lab.HostLink)
	}
	links, err := netlink.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range links {
		if l.Attrs().Name == lab.HostLink {
			continue
		}
		addrs, _ := netlink.AddrList(l, netlink.FAMILY_V4)
		for _, a := range addrs {
			if subnet.Contains(a.IP) || external.Contains(a.IP) {
				t.Errorf("host link %s carries lab address %s", l.Attrs().Name, a.IPNet)
			}
		}
	}
	// Datacenters and nodes have only their underlay address: no default route out.
	r := execIn(t, "dc1-n1", "ip", "-4", "route")
	if strings.Contains(r, "default") {
		t.Errorf("node namespace dc1-n1 has a default route: %s", r)
	}
	// The internet namespace sits on its own segment: the underlay is unreachable from it.
	probe := fmt.Sprintf("echo > /dev/tcp/%s/6443", s.Datacenters[0].Address)
	if out, err := execInErr("internet", "timeout", "3", "bash", "-c", probe); err == nil {
		t.Errorf("the internet namespace reaches the underlay: %s", out)
	}
	// ... while a node reaches its datacenter's server.
	if out, err := execInErr("dc1-n1", "timeout", "3", "bash", "-c", probe); err != nil {
		t.Errorf("node dc1-n1 cannot reach the server of dc1: %v %s", err, out)
	}
}

// execIn runs a command in a lab namespace through kumo-lab's own function.
func execIn(t *testing.T, target string, argv ...string) string {
	t.Helper()
	out, err := execInErr(target, argv...)
	if err != nil {
		t.Fatalf("exec in %s: %s: %v: %s", target, strings.Join(argv, " "), err, out)
	}
	return out
}

func execInErr(target string, argv ...string) (string, error) {
	ns, err := theLab.NamespaceOf(target)
	if err != nil {
		return "", err
	}
	f, err := os.CreateTemp("", "kumo-lab-exec-")
	if err != nil {
		return "", err
	}
	defer os.Remove(f.Name())
	defer f.Close()
	devnull, _ := os.Open(os.DevNull)
	defer devnull.Close()
	err = lab.ExecIn(ns, argv, devnull, f, f)
	_, _ = f.Seek(0, io.SeekStart)
	b, _ := io.ReadAll(f)
	return string(b), err
}

// replicatedVM is a tiny VM booting from a replicated disk cloned from the golden image, with a
// replicated data disk (/dev/vdb). The three VMs' system disks are made by agents of three
// datacenters at once from the tenant's new base: its young age keeps the others' garbage
// collection off it.
func replicatedVM(name string) string {
	return fmt.Sprintf(`apiVersion: apps.cozystack.io/v1alpha1
kind: VMDisk
metadata:
  name: %[1]s-sys
spec:
  source:
    image:
      name: kumo-tiny
  storage: 1Gi
  storageClass: replicated
---
apiVersion: apps.cozystack.io/v1alpha1
kind: VMDisk
metadata:
  name: %[1]s-data
spec:
  storage: 1Gi
  storageClass: replicated
---
apiVersion: apps.cozystack.io/v1alpha1
kind: VMInstance
metadata:
  name: %[1]s
spec:
  instanceType: s1.small
  instanceProfile: debian
  disks:
  - name: %[1]s-sys
  - name: %[1]s-data
`, name)
}

func getVM(t *testing.T, name string) *apps.VMInstance {
	t.Helper()
	var vm apps.VMInstance
	out := mustKumo(t, tenantKC, "get", "vm", name, "-o", "json")
	if err := json.Unmarshal([]byte(out), &vm); err != nil {
		t.Fatalf("decode VM %s: %v", name, err)
	}
	return &vm
}

// consoleRun types one shell line into a VM's console and waits for the guest to run it.
func consoleRun(vm, input string) Result {
	marker := time.Now().UnixNano() % 1_000_000_000
	line := strings.TrimRight(input, "\n") + fmt.Sprintf("; echo lab-done-$((%d+1))\n", marker)
	return kumo(tenantKC, line, "console", vm, "--until", fmt.Sprintf("lab-done-%d", marker+1), "--timeout", "60s")
}

func TestReplicatedVMBootsInEveryDatacenter(t *testing.T) {
	s := needLab(t)
	if _, err := os.Stat(filepath.Join(repoRoot, "_output", "images", "kumo-tiny.qcow2")); err != nil && os.Getenv("KUMO_IMAGES_DIR") == "" {
		t.Fatalf("guest image missing (images/build.sh kumo-tiny): %v", err)
	}
	tenantKC = filepath.Join(s.Dir, "labt.kubeconfig")
	mustKumo(t, s.Kubeconfig, "tenant", "create", "labt", "-o", tenantKC)
	var manifest []string
	for i := range s.Datacenters {
		manifest = append(manifest, replicatedVM(fmt.Sprintf("vm%d", i+1)))
	}
	if r := kumo(tenantKC, strings.Join(manifest, "---\n"), "apply", "-f", "-"); r.Err != nil {
		t.Fatal(r)
	}
	// The scheduler spreads the three VMs over the three datacenters.
	eventually(t, 6*time.Minute, "three VMs running", func() (bool, string) {
		var why []string
		for i := range s.Datacenters {
			vm := getVM(t, fmt.Sprintf("vm%d", i+1))
			if vm.Status.Phase != apps.VMRunning {
				why = append(why, fmt.Sprintf("%s %s %v", vm.Name, vm.Status.Phase, vm.Status.Conditions))
			}
		}
		return len(why) == 0, strings.Join(why, "; ")
	})
	for i := range s.Datacenters {
		vm := getVM(t, fmt.Sprintf("vm%d", i+1))
		vmByDC[vm.Status.Datacenter] = vm.Name
		t.Logf("%s runs on %s in %s (incarnation %d)", vm.Name, vm.Status.Node, vm.Status.Datacenter, vm.Status.Incarnation)
	}
	if len(vmByDC) != len(s.Datacenters) {
		t.Errorf("VMs landed in %v, want one in each of the %d datacenters", vmByDC, len(s.Datacenters))
	}
	for dc, name := range vmByDC {
		eventually(t, 4*time.Minute, "the guest marker of "+name, func() (bool, string) {
			out := kumo(tenantKC, "", "console", name, "--show-log").Stdout
			return strings.Contains(out, "KUMO-GUEST-READY hostname="+name), dc
		})
	}
}

func TestPartitionedNodeReconnectsWithoutRestartingVMs(t *testing.T) {
	s := needLab(t)
	if len(vmByDC) == 0 {
		t.Fatal("no VMs from TestReplicatedVMBootsInEveryDatacenter")
	}
	// A VM outside the first datacenter, whose server stays up.
	name := vmByDC[s.Datacenters[len(s.Datacenters)-1].Name]
	vm := getVM(t, name)
	node, inc := vm.Status.Node, vm.Status.Incarnation
	qemus, err := lab.QEMUs(s, node)
	if err != nil || len(qemus) != 1 {
		t.Fatalf("QEMUs of %s: %v %v, want one", node, qemus, err)
	}
	n, _ := s.Node(node)
	logStart := fileSize(n.Agent.Log)
	if err := lab.PartitionNode(s, node, tlog{t}); err != nil {
		t.Fatal(err)
	}
	healed := false
	defer func() {
		if !healed {
			_ = lab.Heal(context.Background(), s, tlog{t})
		}
	}()
	want := "cannot reach any API server"
	if !s.ReplicatedCP {
		want = "msg=heartbeat"
	}
	eventually(t, 45*time.Second, "the partitioned agent to log that it cannot reach a server", func() (bool, string) {
		return strings.Contains(logSince(n.Agent.Log, logStart), want), "no " + want
	})
	// Marking the node NotReady once its heartbeat stops is failure detection (node leases, the
	// HA issue); here the agent only has to notice it is cut off and come back unharmed.
	if err := lab.Heal(context.Background(), s, tlog{t}); err != nil {
		t.Fatal(err)
	}
	healed = true
	if err := lab.WaitNodes(context.Background(), s, []string{node}, true, time.Minute); err != nil {
		t.Fatal(err)
	}
	after, err := lab.QEMUs(s, node)
	if err != nil || !slices.Equal(after, qemus) {
		t.Errorf("QEMUs of %s after heal: %v (%v), want the same %v", node, after, err, qemus)
	}
	if vm := getVM(t, name); vm.Status.Incarnation != inc || vm.Status.Node != node || vm.Status.Phase != apps.VMRunning {
		t.Errorf("after heal %s is %s on %s incarnation %d, want Running on %s incarnation %d", name, vm.Status.Phase, vm.Status.Node, vm.Status.Incarnation, node, inc)
	}
	if r := consoleRun(name, "echo still-$((20+22))"); !strings.Contains(r.Stdout, "still-42") {
		t.Errorf("console after heal: %s", r)
	}
}

func TestKillLeaderDatacenterKeepsAPIAndDisksServing(t *testing.T) {
	s := needLab(t)
	if !s.ReplicatedCP {
		t.Skip("needs kumod with a replicated control plane (--etcd-initial-cluster)")
	}
	ctx := context.Background()
	holder, victim, _, err := s.Leader(ctx, s.Datacenters[0].URL)
	if err != nil {
		t.Fatal(err)
	}
	if victim == "" {
		t.Fatalf("leader %q is in no datacenter of the lab", holder)
	}
	vm, ok := "", false
	for dc, name := range vmByDC {
		if dc != victim {
			vm, ok = name, true
			break
		}
	}
	if !ok {
		t.Fatal("no VM outside the leader's datacenter")
	}
	// Objects acknowledged before the kill.
	var acked []string
	for i := range 10 {
		name := fmt.Sprintf("acked-%d", i)
		mustKumo(t, s.Kubeconfig, "tenant", "create", name, "-o", filepath.Join(t.TempDir(), name))
		acked = append(acked, name)
	}
	var survivors []string
	for _, dc := range s.Datacenters {
		if dc.Name != victim {
			survivors = append(survivors, dc.URL)
		}
	}
	t.Logf("leader %s in %s; killing %s", holder, victim, victim)
	killed := time.Now()
	if err := lab.KillDC(s, victim, tlog{t}); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = lab.Heal(context.Background(), s, tlog{t}) }()

	// A new leader in another datacenter within a few seconds.
	newHolder, seen, err := s.WaitNewLeader(ctx, holder, victim, killed, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	failover := seen.Sub(killed)
	t.Logf("new leader %s %v after kill-dc %s", newHolder, failover.Round(10*time.Millisecond), victim)
	if failover > 15*time.Second {
		t.Errorf("leader failover took %v, want a few seconds", failover)
	}
	// Every surviving server answers, and every acknowledged object is there.
	for _, u := range survivors {
		if err := lab.Readyz(ctx, s.Kubeconfig, u); err != nil {
			t.Errorf("surviving server %s: %v", u, err)
		}
	}
	out := mustKumo(t, s.Kubeconfig, "get", "tenants", "-o", "name")
	for _, name := range acked {
		if !strings.Contains(out, "/"+name+"\n") {
			t.Errorf("tenant %s acknowledged before the kill is gone: %s", name, out)
		}
	}
	// Agents of the surviving datacenters stay or become Ready again.
	var alive []string
	for _, n := range s.Nodes {
		if n.Datacenter != victim {
			alive = append(alive, n.Name)
		}
	}
	if err := lab.WaitNodes(ctx, s, alive, true, 30*time.Second); err != nil {
		t.Error(err)
	}
	// The replicated disk of a VM outside the dead datacenter stays writable.
	start := time.Now()
	r := consoleRun(vm, "echo LAB-AFTER-KILL > /dev/vdb; sync; head -c 14 /dev/vdb; echo")
	t.Logf("write+sync on %s's replicated disk after kill-dc: %v (since the kill: %v)", vm, time.Since(start).Round(10*time.Millisecond), time.Since(killed).Round(10*time.Millisecond))
	// The guest's answer is a line of its own (the echoed command line holds the text too).
	if !regexp.MustCompile(`(?m)^LAB-AFTER-KILL\r?$`).MatchString(r.Stdout) {
		t.Errorf("write to the replicated disk after kill-dc: %s", r)
	}
	h, err := s.CephStatus(ctx)
	if err == nil {
		t.Logf("ceph after kill-dc: %s %v quorum %v osds up %d, pgs inactive %d", h.Status, h.Checks, h.Quorum, h.OSDsUp, h.PGsInactive)
	}
	killedDC = victim
}

var killedDC string

func TestHealRejoinsTheDatacenter(t *testing.T) {
	s := needLab(t)
	ctx := context.Background()
	if err := lab.Heal(ctx, s, tlog{t}); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	for _, dc := range s.Datacenters {
		if dc.Server == nil {
			continue
		}
		eventually(t, time.Minute, "server of "+dc.Name, func() (bool, string) {
			err := lab.Readyz(ctx, s.Kubeconfig, dc.URL)
			return err == nil, fmt.Sprint(err)
		})
	}
	if err := lab.WaitNodesReady(ctx, s, 90*time.Second); err != nil {
		t.Error(err)
	}
	if err := lab.WaitCephHealthy(ctx, s, 3*time.Minute); err != nil {
		t.Error(err)
	}
	t.Logf("after heal (killed %q): servers, nodes and Ceph HEALTH_OK in %v", killedDC, time.Since(start).Round(100*time.Millisecond))
	if s.ReplicatedCP && killedDC != "" {
		d, _ := s.DC(killedDC)
		// The healed server serves reads from the cluster's data, written while it was dead.
		if err := lab.Get(ctx, s.Kubeconfig, d.URL, "/apis/kumo.dev/v1alpha1/tenants/acked-9"); err != nil {
			t.Errorf("healed server %s does not serve objects written before its death: %v", d.URL, err)
		}
	}
}

// tlog writes what the fault functions print into the test log.
type tlog struct{ t *testing.T }

func (l tlog) Write(p []byte) (int, error) {
	l.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func fileSize(path string) int64 {
	st, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return st.Size()
}

func logSince(path string, off int64) string {
	b, err := os.ReadFile(path)
	if err != nil || int64(len(b)) < off {
		return ""
	}
	return string(b[off:])
}
