package e2e

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	apps "kumo.dev/kumo/pkg/apis/apps/v1alpha1"
	kumo "kumo.dev/kumo/pkg/apis/kumo/v1alpha1"
	"kumo.dev/kumo/pkg/client"
)

func listVMs(t *testing.T, cl *client.Client, ns string) []apps.VMInstance {
	t.Helper()
	l := &apps.VMInstanceList{}
	if err := cl.Apps.Get().Namespace(ns).Resource("vminstances").Do(context.Background()).Into(l); err != nil {
		t.Fatal(err)
	}
	return l.Items
}

// TestThreeAgentsSpreadVMsAndNeverOvercommit runs a server with three agents (separate
// processes, one per datacenter, 2 vCPU / 9 GiB each): six u1.medium VMs spread two per
// datacenter, a seventh stays Pending with the reason; then an agent is killed with SIGKILL and
// its VMs keep running and are re-attached by the restarted agent.
func TestThreeAgentsSpreadVMsAndNeverOvercommit(t *testing.T) {
	needCluster(t)
	needImages(t)
	c := startServer(t, "kumo-3n-")
	capacity := []string{"--cpus", "2", "--memory", "9Gi", "--reserve-memory", "0"}
	agents := map[string]*Agent{}
	for i, dc := range []string{"geneva", "lucerne", "gland"} {
		node := fmt.Sprintf("n%d", i+1)
		agents[node] = c.StartAgent(t, node, dc, capacity...)
	}
	admin := c.Admin(t)
	eventually(t, time.Minute, "three ready nodes", func() bool { return readyNodes(admin) == 3 })

	kc := c.NewTenant(t, "spread")
	cl := c.Client(t, kc)
	ns := kumo.TenantNamespace("spread")
	for i := 1; i <= 7; i++ {
		m := fmt.Sprintf("apiVersion: apps.cozystack.io/v1alpha1\nkind: VMInstance\nmetadata:\n  name: vm%d\nspec:\n  instanceType: u1.medium\n", i)
		if r := Run(kc, m, bins.kumo, "apply", "-f", "-"); r.Err != nil {
			t.Fatal(r)
		}
		time.Sleep(100 * time.Millisecond) // create in order, so that vm7 is the one left over
	}
	var vms []apps.VMInstance
	eventually(t, 3*time.Minute, "six VMs running", func() bool {
		vms = listVMs(t, cl, ns)
		n := 0
		for _, vm := range vms {
			if vm.Status.Phase == apps.VMRunning {
				n++
			}
		}
		return n == 6
	})
	perDC, perNode := map[string]int{}, map[string]int{}
	var pending []apps.VMInstance
	for _, vm := range vms {
		if vm.Status.Node == "" {
			pending = append(pending, vm)
			continue
		}
		perDC[vm.Status.Datacenter]++
		perNode[vm.Status.Node]++
	}
	if perDC["geneva"] != 2 || perDC["lucerne"] != 2 || perDC["gland"] != 2 {
		t.Errorf("VMs per datacenter: %v", perDC)
	}
	for node, n := range perNode {
		if n > 2 {
			t.Errorf("node %s overcommitted with %d u1.medium VMs (2 vCPU allocatable)", node, n)
		}
	}
	if len(pending) != 1 {
		t.Fatalf("want exactly one pending VM, got %d", len(pending))
	}
	p := waitVM(t, cl, ns, pending[0].Name, "an unschedulable reason", 30*time.Second, func(vm *apps.VMInstance) bool {
		for _, cond := range vm.Status.Conditions {
			if cond.Type == apps.ConditionScheduled && strings.Contains(cond.Message, "no node has 1 vCPU / 4Gi free") {
				return true
			}
		}
		return false
	})
	if p.Status.Phase != apps.VMPending {
		t.Errorf("the seventh VM is %s", p.Status.Phase)
	}

	// Kill an agent with SIGKILL: its QEMUs live on, and the restarted agent takes them back.
	victim := agents["n1"]
	before := qemuPIDsUnder(victim.Dir)
	if len(before) != 2 {
		t.Fatalf("node n1 runs %d QEMUs, want 2", len(before))
	}
	incarnations := map[string]int64{}
	for _, vm := range listVMs(t, cl, ns) {
		incarnations[vm.Name] = vm.Status.Incarnation
	}
	victim.Kill()
	time.Sleep(2 * time.Second)
	for _, pid := range before {
		if err := syscall.Kill(pid, 0); err != nil {
			t.Fatalf("QEMU %d died with its agent: %v", pid, err)
		}
	}
	victim.Start(t)
	eventually(t, time.Minute, "the restarted agent re-attaches both VMs", func() bool {
		return strings.Count(victim.Log(), "re-attached VM") == 2
	})
	time.Sleep(3 * time.Second) // a few sync passes
	after := qemuPIDsUnder(victim.Dir)
	sort.Ints(before)
	sort.Ints(after)
	if fmt.Sprint(before) != fmt.Sprint(after) {
		t.Errorf("QEMU processes before %v, after the agent restart %v", before, after)
	}
	for _, vm := range listVMs(t, cl, ns) {
		if vm.Status.Node == "n1" && (vm.Status.Phase != apps.VMRunning || vm.Status.Incarnation != incarnations[vm.Name]) {
			t.Errorf("VM %s on n1 after the agent restart: %s incarnation %d (was %d)", vm.Name, vm.Status.Phase, vm.Status.Incarnation, incarnations[vm.Name])
		}
	}
}

// TestRunStrategies checks KubeVirt's run strategies on a tiny guest that powers itself off
// (cloud-init power_state) and on VMs driven by kumo start/stop.
func TestRunStrategies(t *testing.T) {
	c := startAllInOne(t, "--cpus", "8")
	kc := c.NewTenant(t, "strategies")
	cl := c.Client(t, kc)
	ns := kumo.TenantNamespace("strategies")
	powerOff := "  cloudInit: |\n    #cloud-config\n    power_state:\n      mode: poweroff\n      delay: now\n"
	for _, vm := range []struct{ name, strategy string }{{"always", "Always"}, {"rerun", "RerunOnFailure"}, {"once", "Once"}} {
		m := tinyVM(vm.name, "disk-"+vm.name, "  runStrategy: "+vm.strategy+"\n"+powerOff)
		if r := Run(kc, m, bins.kumo, "apply", "-f", "-"); r.Err != nil {
			t.Fatal(r)
		}
	}
	for _, vm := range []struct{ name, strategy string }{{"halted", "Halted"}, {"manual", "Manual"}} {
		m := fmt.Sprintf("apiVersion: apps.cozystack.io/v1alpha1\nkind: VMInstance\nmetadata:\n  name: %s\nspec:\n  instanceType: s1.small\n  runStrategy: %s\n", vm.name, vm.strategy)
		if r := Run(kc, m, bins.kumo, "apply", "-f", "-"); r.Err != nil {
			t.Fatal(r)
		}
	}
	stopped := func(vm *apps.VMInstance) bool { return vm.Status.Phase == apps.VMStopped && vm.Status.Node == "" }

	// Halted never starts; Manual waits for kumo start, and kumo stop ends it.
	if vm := waitVM(t, cl, ns, "halted", "Stopped", time.Minute, stopped); vm.Status.Incarnation != 0 {
		t.Errorf("Halted VM got incarnation %d", vm.Status.Incarnation)
	}
	waitVM(t, cl, ns, "manual", "Stopped", time.Minute, stopped)
	c.MustKumo(t, kc, "start", "manual")
	waitVM(t, cl, ns, "manual", "Running after start", 2*time.Minute, running)
	c.MustKumo(t, kc, "stop", "manual")
	if vm := waitVM(t, cl, ns, "manual", "Stopped after stop", 2*time.Minute, stopped); vm.Spec.RunStrategy != apps.RunManual || vm.Status.Incarnation != 1 {
		t.Errorf("Manual VM after stop: strategy %s incarnation %d", vm.Spec.RunStrategy, vm.Status.Incarnation)
	}

	// The guests power themselves off after boot.
	endedCleanly := func(vm *apps.VMInstance) bool {
		return stopped(vm) && vm.Status.LastExit != nil && vm.Status.LastExit.Reason == apps.ExitSucceeded
	}
	for _, name := range []string{"rerun", "once"} {
		vm := waitVM(t, cl, ns, name, "a clean guest shutdown that is not rerun", 2*bootTimeout, endedCleanly)
		if vm.Status.Incarnation != 1 {
			t.Errorf("%s: incarnation %d after the guest powered off, want 1", name, vm.Status.Incarnation)
		}
	}
	vm := waitVM(t, cl, ns, "always", "a new incarnation after the guest powered off", 2*bootTimeout, func(vm *apps.VMInstance) bool {
		return vm.Status.Incarnation >= 2 && vm.Status.LastExit != nil && vm.Status.LastExit.Reason == apps.ExitSucceeded
	})
	if vm.Status.Restarts < 1 {
		t.Errorf("Always VM restarts %d", vm.Status.Restarts)
	}
	time.Sleep(3 * time.Second)
	for _, name := range []string{"rerun", "once", "halted", "manual"} {
		if vm := getVM(t, cl, ns, name); !stopped(vm) {
			t.Errorf("%s restarted: %s on %q", name, vm.Status.Phase, vm.Status.Node)
		}
	}
}
