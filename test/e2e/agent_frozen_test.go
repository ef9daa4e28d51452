package e2e

import (
	"strings"
	"syscall"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	apps "kumo.dev/kumo/pkg/apis/apps/v1alpha1"
	kumo "kumo.dev/kumo/pkg/apis/kumo/v1alpha1"
)

// readyIs holds when the VM's Ready condition has the status and reason.
func readyIs(status metav1.ConditionStatus, reason string) func(*apps.VMInstance) bool {
	return func(vm *apps.VMInstance) bool {
		c := meta.FindStatusCondition(vm.Status.Conditions, apps.ConditionReady)
		return c != nil && c.Status == status && (reason == "" || c.Reason == reason)
	}
}

// TestAFrozenQEMUNeitherStallsTheAgentNorGetsASecondOne: a guest's QEMU stopped with SIGSTOP
// answers nothing. Its VM is reported unknown (Ready=Unknown) while another VM on the same agent
// starts and stops; after a restart of the whole all-in-one the frozen QEMU is still not taken
// for dead: no second QEMU, same incarnation, and after SIGCONT it is re-attached. A stop of a
// VM whose QEMU stays frozen across a restart ends it with SIGKILL.
func TestAFrozenQEMUNeitherStallsTheAgentNorGetsASecondOne(t *testing.T) {
	c := startAllInOne(t)
	tenant := "frozen"
	kc := c.NewTenant(t, tenant)
	cl := c.Client(t, kc)
	ns := kumo.TenantNamespace(tenant)
	if r := Run(kc, tinyVM("ice", "ice-sys", ""), bins.kumo, "apply", "-f", "-"); r.Err != nil {
		t.Fatal(r)
	}
	waitVM(t, cl, ns, "ice", "Running", bootTimeout, running)
	pids := qemuPIDsUnder(c.Dir)
	if len(pids) != 1 {
		t.Fatalf("QEMU processes: %v, want one", pids)
	}
	frozen := pids[0]
	if err := syscall.Kill(frozen, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	thawed := false
	defer func() {
		if !thawed {
			syscall.Kill(frozen, syscall.SIGCONT)
		}
	}()
	waitVM(t, cl, ns, "ice", "Ready=Unknown (QEMUUnresponsive)", time.Minute, readyIs(metav1.ConditionUnknown, "QEMUUnresponsive"))

	// Another VM of the node starts and stops while the first QEMU is frozen.
	if r := Run(kc, tinyVM("fire", "fire-sys", ""), bins.kumo, "apply", "-f", "-"); r.Err != nil {
		t.Fatal(r)
	}
	waitVM(t, cl, ns, "fire", "Running next to a frozen QEMU", bootTimeout, running)
	c.MustKumo(t, kc, "stop", "fire")
	waitVM(t, cl, ns, "fire", "Stopped next to a frozen QEMU", 2*time.Minute, func(vm *apps.VMInstance) bool {
		return vm.Status.Phase == apps.VMStopped && vm.Status.Node == ""
	})
	eventually(t, time.Minute, "the second VM's QEMU gone", func() bool { return len(qemuPIDsUnder(c.Dir)) == 1 })

	// Restart the all-in-one (server and agent) while the QEMU is still frozen.
	c.Stop()
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	eventually(t, 2*time.Minute, "the restarted agent finding the frozen QEMU unresponsive", func() bool {
		return strings.Contains(c.Log(), "QEMU does not answer; retrying")
	})
	// Several attempts, well past a QMP timeout: still unknown, still one QEMU, same incarnation.
	eventually(t, time.Minute, "three attempts to reach the frozen QEMU", func() bool {
		return strings.Count(c.Log(), "QEMU does not answer; retrying") >= 3
	})
	vm := getVM(t, cl, ns, "ice")
	if !readyIs(metav1.ConditionUnknown, "QEMUUnresponsive")(vm) || vm.Status.Incarnation != 1 || vm.Status.Phase != apps.VMRunning {
		t.Fatalf("frozen VM after the restart: phase %s incarnation %d conditions %+v lastExit %+v",
			vm.Status.Phase, vm.Status.Incarnation, vm.Status.Conditions, vm.Status.LastExit)
	}
	if pids := qemuPIDsUnder(c.Dir); len(pids) != 1 || pids[0] != frozen {
		t.Fatalf("QEMU processes while frozen after the restart: %v, want only %d", pids, frozen)
	}

	if err := syscall.Kill(frozen, syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	thawed = true
	vm = waitVM(t, cl, ns, "ice", "Ready again after SIGCONT", 2*time.Minute, func(vm *apps.VMInstance) bool {
		return running(vm) && readyIs(metav1.ConditionTrue, "")(vm)
	})
	if vm.Status.Incarnation != 1 || vm.Status.LastExit != nil {
		t.Errorf("after SIGCONT: incarnation %d lastExit %+v, want incarnation 1 never ended", vm.Status.Incarnation, vm.Status.LastExit)
	}
	if !strings.Contains(c.Log(), "re-attached VM") {
		t.Errorf("the agent did not re-attach the thawed QEMU")
	}
	if pids := qemuPIDsUnder(c.Dir); len(pids) != 1 || pids[0] != frozen {
		t.Errorf("QEMU processes after SIGCONT: %v, want only %d", pids, frozen)
	}

	// Frozen again and the agent restarted: a stop is still carried out. The QEMU that never
	// answers is killed (after the stop grace period), never left running next to a new one.
	if err := syscall.Kill(frozen, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	thawed = false
	c.Stop()
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	eventually(t, 2*time.Minute, "the restarted agent finding the QEMU frozen again", func() bool {
		return strings.Contains(c.Log(), "QEMU does not answer; retrying")
	})
	c.MustKumo(t, kc, "stop", "ice")
	vm = waitVM(t, cl, ns, "ice", "Stopped although its QEMU is frozen", 3*time.Minute, func(vm *apps.VMInstance) bool {
		return vm.Status.Phase == apps.VMStopped && vm.Status.Node == ""
	})
	if e := vm.Status.LastExit; e == nil || e.Incarnation != 1 || e.Reason != apps.ExitStopped || !strings.Contains(e.Message, "did not answer and was killed") {
		t.Errorf("lastExit of the frozen VM stopped: %+v", e)
	}
	eventually(t, time.Minute, "the frozen QEMU gone", func() bool { return len(qemuPIDsUnder(c.Dir)) == 0 })
	thawed = true
}
