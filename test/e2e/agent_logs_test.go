package e2e

import (
	"strings"
	"testing"
	"time"

	apps "kumo.dev/kumo/pkg/apis/apps/v1alpha1"
	kumo "kumo.dev/kumo/pkg/apis/kumo/v1alpha1"
)

// TestSerialLogOfAStoppedVMStaysReadable: once an incarnation ended, its serial log is still
// served by kumo console --show-log, through the node recorded in status.lastExit.
func TestSerialLogOfAStoppedVMStaysReadable(t *testing.T) {
	c := startAllInOne(t)
	tenant := "lastwords"
	kc := c.NewTenant(t, tenant)
	cl := c.Client(t, kc)
	ns := kumo.TenantNamespace(tenant)
	if r := Run(kc, tinyVM("vm", "vm-sys", ""), bins.kumo, "apply", "-f", "-"); r.Err != nil {
		t.Fatal(r)
	}
	waitVM(t, cl, ns, "vm", "Running", bootTimeout, running)
	eventually(t, bootTimeout, "the guest's marker on the serial console", func() bool {
		return strings.Contains(c.MustKumo(t, kc, "console", "vm", "--show-log"), "KUMO-GUEST-READY")
	})

	c.MustKumo(t, kc, "stop", "vm")
	vm := waitVM(t, cl, ns, "vm", "Stopped", 2*time.Minute, func(vm *apps.VMInstance) bool {
		return vm.Status.Phase == apps.VMStopped && vm.Status.Node == ""
	})
	if e := vm.Status.LastExit; e == nil || e.Node != "aio" || e.Incarnation != 1 {
		t.Fatalf("lastExit %+v, want incarnation 1 on node aio", e)
	}
	log := c.MustKumo(t, kc, "console", "vm", "--show-log")
	if !strings.Contains(log, "KUMO-GUEST-READY hostname=vm ") {
		t.Errorf("serial log of the stopped VM lacks the guest's marker: %q", tail(log, 10))
	}

	// A second incarnation: show-log follows the running one, and after it ends, the latest.
	c.MustKumo(t, kc, "start", "vm")
	waitVM(t, cl, ns, "vm", "Running again", bootTimeout, func(vm *apps.VMInstance) bool { return running(vm) && vm.Status.Incarnation == 2 })
	eventually(t, bootTimeout, "the second incarnation's marker", func() bool {
		return strings.Contains(c.MustKumo(t, kc, "console", "vm", "--show-log"), "KUMO-GUEST-READY")
	})
	c.MustKumo(t, kc, "stop", "vm")
	waitVM(t, cl, ns, "vm", "Stopped again", 2*time.Minute, func(vm *apps.VMInstance) bool {
		return vm.Status.Phase == apps.VMStopped && vm.Status.Node == "" && vm.Status.LastExit != nil && vm.Status.LastExit.Incarnation == 2
	})
	if log := c.MustKumo(t, kc, "console", "vm", "--show-log"); strings.Count(log, "KUMO-GUEST-READY") != 1 {
		t.Errorf("serial log after the second stop holds %d markers, want the second incarnation's one: %q", strings.Count(log, "KUMO-GUEST-READY"), tail(log, 10))
	}
}
