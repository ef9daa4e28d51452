package e2e

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	apps "kumo.dev/kumo/pkg/apis/apps/v1alpha1"
	kumo "kumo.dev/kumo/pkg/apis/kumo/v1alpha1"
	"kumo.dev/kumo/pkg/client"
)

// bootTimeout bounds a tiny guest's boot to its marker under TCG on a loaded 2-core machine.
const bootTimeout = 3 * time.Minute

func needImages(t *testing.T) {
	t.Helper()
	if _, err := os.Stat(filepath.Join(imagesDir(), "kumo-tiny.qcow2")); err != nil {
		t.Fatalf("guest image missing (run make images): %v", err)
	}
}

// startServer starts a kumod server alone (agents are added with StartAgent), its data in a
// temporary directory named by prefix, stopped and removed when the test ends.
func startServer(t *testing.T, prefix string) *Cluster {
	t.Helper()
	dir, err := os.MkdirTemp("", prefix)
	if err != nil {
		t.Fatal(err)
	}
	c, err := StartCluster(dir, "server")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Stop(); os.RemoveAll(dir) })
	return c
}

// startAllInOne starts an all-in-one cluster with its own agent for the test.
func startAllInOne(t *testing.T, extra ...string) *Cluster {
	t.Helper()
	needCluster(t)
	needImages(t)
	dir, err := os.MkdirTemp("", "kumo-aio-")
	if err != nil {
		t.Fatal(err)
	}
	c, err := StartCluster(dir, "all-in-one", append(append(agentFlags(), "--node", "aio", "--datacenter", "dc1"), extra...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c.Stop()
		killQEMUsUnder(dir)
		if t.Failed() {
			t.Logf("kumod log:\n%s", tail(c.Log(), 60))
		}
		os.RemoveAll(dir)
	})
	return c
}

func tail(s string, lines int) string {
	ls := strings.Split(s, "\n")
	if len(ls) > lines {
		ls = ls[len(ls)-lines:]
	}
	return strings.Join(ls, "\n")
}

func getVM(t *testing.T, cl *client.Client, ns, name string) *apps.VMInstance {
	t.Helper()
	vm := &apps.VMInstance{}
	if err := cl.Apps.Get().Namespace(ns).Resource("vminstances").Name(name).Do(context.Background()).Into(vm); err != nil {
		t.Fatalf("get VM %s: %v", name, err)
	}
	return vm
}

// waitVM polls the VM until cond holds.
func waitVM(t *testing.T, cl *client.Client, ns, name, what string, timeout time.Duration, cond func(*apps.VMInstance) bool) *apps.VMInstance {
	t.Helper()
	var vm *apps.VMInstance
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		vm = getVM(t, cl, ns, name)
		if cond(vm) {
			return vm
		}
		time.Sleep(250 * time.Millisecond)
	}
	t.Fatalf("VM %s: timed out after %s waiting for %s; phase %s node %q incarnation %d conditions %+v lastExit %+v",
		name, timeout, what, vm.Status.Phase, vm.Status.Node, vm.Status.Incarnation, vm.Status.Conditions, vm.Status.LastExit)
	return nil
}

func running(vm *apps.VMInstance) bool { return vm.Status.Phase == apps.VMRunning }

func tinyVM(name, disk, extraSpec string) string {
	return fmt.Sprintf(`apiVersion: apps.cozystack.io/v1alpha1
kind: VMDisk
metadata:
  name: %[2]s
spec:
  source:
    image:
      name: kumo-tiny
  storage: 1Gi
  storageClass: local
---
apiVersion: apps.cozystack.io/v1alpha1
kind: VMInstance
metadata:
  name: %[1]s
spec:
  instanceType: s1.small
  instanceProfile: debian
  disks:
  - name: %[2]s
%[3]s`, name, disk, extraSpec)
}

func TestAllInOneRunsAVMWithConsoleVNCAndLifecycle(t *testing.T) {
	c := startAllInOne(t)
	tenant := "boot"
	kc := c.NewTenant(t, tenant)
	otherKC := c.NewTenant(t, "peeper")
	cl := c.Client(t, kc)
	ns := kumo.TenantNamespace(tenant)
	keys := "  sshKeys:\n  - " + sshKey(t) + "\n  - " + sshKey(t) + "\n"
	if r := Run(kc, tinyVM("vm1", "sys1", keys), bins.kumo, "apply", "-f", "-"); r.Err != nil {
		t.Fatal(r)
	}
	vm := waitVM(t, cl, ns, "vm1", "Running", bootTimeout, running)
	if vm.Status.Node != "aio" || vm.Status.Datacenter != "dc1" || vm.Status.Incarnation != 1 {
		t.Errorf("status: node %q dc %q incarnation %d", vm.Status.Node, vm.Status.Datacenter, vm.Status.Incarnation)
	}
	disk := &apps.VMDisk{}
	if err := cl.Apps.Get().Namespace(ns).Resource("vmdisks").Name("sys1").Do(context.Background()).Into(disk); err != nil || disk.Status.Phase != apps.DiskReady || disk.Status.Node != "aio" {
		t.Errorf("disk after boot: %+v %v", disk.Status, err)
	}

	// The guest's marker, from the log the agent kept since boot.
	var log string
	eventually(t, bootTimeout, "the guest's marker line on the serial console", func() bool {
		log = c.MustKumo(t, kc, "console", "vm1", "--show-log")
		return strings.Contains(log, "KUMO-GUEST-READY")
	})
	if !strings.Contains(log, "KUMO-GUEST-READY hostname=vm1 ") || !strings.Contains(log, " keys=2") {
		t.Errorf("marker line: %q", grepLine(log, "KUMO-GUEST-READY"))
	}
	// Interactive console through a pipe.
	r := consoleRun(kc, "vm1", "echo console-$((40+2))")
	if r.Err != nil || !strings.Contains(r.Stdout, "console-42") {
		t.Errorf("kumo console with a pipe: %s", r)
	}
	// VNC through a local port speaking plain RFB.
	if greeting := vncGreeting(t, kc, "vm1"); greeting != "RFB 003.008\n" {
		t.Errorf("VNC greeting %q", greeting)
	}
	// Another tenant is refused.
	if r := c.Kumo(otherKC, "console", "vm1", "-n", ns, "--show-log"); r.Err == nil || !strings.Contains(r.Stderr, `cannot get resource "vminstances/console"`) {
		t.Errorf("another tenant's console: %s", r)
	}

	// A disk in use cannot be deleted; growing it resizes it online.
	if r := c.Kumo(kc, "delete", "vmdisk", "sys1"); r.Err == nil || !strings.Contains(r.Stderr, "in use by VM vm1") {
		t.Errorf("deleting a disk in use: %s", r)
	}
	if r := Run(kc, strings.Replace(tinyVM("vm1", "sys1", keys), "storage: 1Gi", "storage: 2Gi", 1), bins.kumo, "apply", "-f", "-"); r.Err != nil {
		t.Fatal(r)
	}
	eventually(t, time.Minute, "the disk grown online", func() bool {
		d := &apps.VMDisk{}
		return cl.Apps.Get().Namespace(ns).Resource("vmdisks").Name("sys1").Do(context.Background()).Into(d) == nil &&
			d.Status.Size != nil && d.Status.Size.Value() == 2<<30
	})
	if r := consoleRun(kc, "vm1", "cat /sys/block/vda/size"); !strings.Contains(r.Stdout, "4194304") {
		t.Errorf("the guest does not see the grown disk (2 GiB = 4194304 sectors): %s", r)
	}

	// Stop, start and restart move through incarnations.
	pids := qemuPIDsUnder(c.Dir)
	if len(pids) != 1 {
		t.Fatalf("QEMU processes for the VM: %v", pids)
	}
	c.MustKumo(t, kc, "stop", "vm1")
	vm = waitVM(t, cl, ns, "vm1", "Stopped", time.Minute, func(vm *apps.VMInstance) bool { return vm.Status.Phase == apps.VMStopped && vm.Status.Node == "" })
	if vm.Spec.RunStrategy != apps.RunHalted || vm.Status.LastExit == nil || vm.Status.LastExit.Reason != apps.ExitStopped {
		t.Errorf("after stop: strategy %s lastExit %+v", vm.Spec.RunStrategy, vm.Status.LastExit)
	}
	eventually(t, 30*time.Second, "QEMU gone after stop", func() bool { return len(qemuPIDsUnder(c.Dir)) == 0 })
	c.MustKumo(t, kc, "start", "vm1")
	waitVM(t, cl, ns, "vm1", "Running again", bootTimeout, func(vm *apps.VMInstance) bool { return running(vm) && vm.Status.Incarnation == 2 })
	// Let the guest finish booting so that it answers the ACPI power button on restart.
	eventually(t, bootTimeout, "the second incarnation's marker", func() bool {
		return strings.Contains(c.MustKumo(t, kc, "console", "vm1", "--show-log"), "KUMO-GUEST-READY")
	})
	c.MustKumo(t, kc, "restart", "vm1")
	waitVM(t, cl, ns, "vm1", "a third incarnation", bootTimeout, func(vm *apps.VMInstance) bool { return running(vm) && vm.Status.Incarnation == 3 })
	if n := len(qemuPIDsUnder(c.Dir)); n != 1 {
		t.Errorf("%d QEMU processes after restart, want 1", n)
	}

	// Deleting the VM stops QEMU and removes its run directory.
	c.MustKumo(t, kc, "delete", "vm", "vm1")
	eventually(t, time.Minute, "QEMU and run directory gone after delete", func() bool {
		dirs, _ := filepath.Glob(filepath.Join(c.Dir, "run", "*"))
		return len(qemuPIDsUnder(c.Dir)) == 0 && len(dirs) == 0
	})
}

func grepLine(s, substr string) string {
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, substr) {
			return l
		}
	}
	return ""
}

// vncGreeting runs kumo vnc --proxy-only and reads the server's first 12 bytes.
func vncGreeting(t *testing.T, kc, vm string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := execKumo(ctx, kc, "vnc", vm, "--proxy-only")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	var port int
	if _, err := fmt.Fscanf(out, "{\"port\":%d}\n", &port); err != nil {
		t.Fatalf("kumo vnc --proxy-only printed no port: %v", err)
	}
	conn, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetReadDeadline(time.Now().Add(20 * time.Second))
	buf := make([]byte, 12)
	n, _ := ioReadFull(conn, buf)
	return string(buf[:n])
}

func TestVMsThatCannotStartEndInAClearState(t *testing.T) {
	c := startAllInOne(t, "--cpus", "512", "--memory", "64Gi")
	admin := c.Admin(t)
	ctx := context.Background()
	// An instance type QEMU refuses (more vCPUs than the machine type allows).
	huge := &kumo.InstanceType{ObjectMeta: metav1.ObjectMeta{Name: "x1.huge"}, Spec: kumo.InstanceTypeSpec{CPUs: 400, Memory: resourceGi(1)}}
	if err := admin.Kumo.Post().Resource("instancetypes").Body(huge).Do(ctx).Error(); err != nil {
		t.Fatal(err)
	}
	kc := c.NewTenant(t, "faulty")
	setQuota(t, admin, "faulty", `{"cpus":1000}`) // x1.huge is past the default vCPU quota
	cl := c.Client(t, kc)
	ns := kumo.TenantNamespace("faulty")
	manifest := "apiVersion: apps.cozystack.io/v1alpha1\nkind: VMInstance\nmetadata:\n  name: toobig\nspec:\n  instanceType: x1.huge\n  runStrategy: Once\n"
	if r := Run(kc, manifest, bins.kumo, "apply", "-f", "-"); r.Err != nil {
		t.Fatal(r)
	}
	vm := waitVM(t, cl, ns, "toobig", "Failed", 2*time.Minute, func(vm *apps.VMInstance) bool { return vm.Status.Phase == apps.VMFailed && vm.Status.Node == "" })
	if vm.Status.LastExit == nil || !strings.Contains(vm.Status.LastExit.Message, "CPUs") {
		t.Errorf("failure does not carry QEMU's complaint: %+v", vm.Status.LastExit)
	}
	// A golden image no node has.
	if r := Run(kc, strings.Replace(tinyVM("noimage", "d-noimage", ""), "kumo-tiny", "no-such-image", 1), bins.kumo, "apply", "-f", "-"); r.Err != nil {
		t.Fatal(r)
	}
	waitVM(t, cl, ns, "noimage", "an unschedulable condition naming the image", time.Minute, func(vm *apps.VMInstance) bool {
		for _, cond := range vm.Status.Conditions {
			if cond.Type == apps.ConditionScheduled && cond.Status == metav1.ConditionFalse && strings.Contains(cond.Message, "golden image no-such-image does not exist") {
				return vm.Status.Phase == apps.VMPending
			}
		}
		return false
	})
	// A replicated disk needs a node with Ceph; this one has none.
	if r := Run(kc, strings.ReplaceAll(tinyVM("noceph", "d-noceph", ""), "storageClass: local", "storageClass: replicated"), bins.kumo, "apply", "-f", "-"); r.Err != nil {
		t.Fatal(r)
	}
	waitVM(t, cl, ns, "noceph", "an unschedulable condition naming the storage class", time.Minute, func(vm *apps.VMInstance) bool {
		for _, cond := range vm.Status.Conditions {
			if cond.Type == apps.ConditionScheduled && strings.Contains(cond.Message, "lacks storage class replicated") {
				return vm.Status.Phase == apps.VMPending
			}
		}
		return false
	})
	// Nothing leaked: no QEMU, no run directory.
	dirs, _ := filepath.Glob(filepath.Join(c.Dir, "run", "*"))
	if pids := qemuPIDsUnder(c.Dir); len(pids) != 0 || len(dirs) != 0 {
		t.Errorf("leftovers: qemu %v run dirs %v", pids, dirs)
	}
}
