package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"

	"kumo.dev/kumo/internal/cloudinit"
	"kumo.dev/kumo/internal/hypervisor/qemu"
	"kumo.dev/kumo/internal/storage"
	apps "kumo.dev/kumo/pkg/apis/apps/v1alpha1"
	kumo "kumo.dev/kumo/pkg/apis/kumo/v1alpha1"
)

// sync moves one VM of this node one step toward what its status and run strategy ask.
func (a *Agent) sync(ctx context.Context, key string) error {
	var vm *apps.VMInstance
	if obj, exists, _ := a.vms.GetStore().GetByKey(key); exists {
		vm = obj.(*apps.VMInstance)
	}
	a.mu.Lock()
	rt := a.running[key]
	a.mu.Unlock()

	if rt != nil && rt.vm == nil {
		// The agent has not reached this incarnation's QEMU: alive or unknown, never dead.
		ok, err := a.attach(ctx, rt)
		if !ok {
			if vm == nil || vm.Status.Node != a.opts.Node || vm.Status.Incarnation != rt.incarnation || string(vm.UID) != rt.uid {
				vm = nil // the VM is gone, or this incarnation is not its current one
			}
			if vm != nil && vm.DeletionTimestamp == nil && vm.WantsRunning() && vm.Status.RestartIncarnation != rt.incarnation {
				return a.reportUnresponsive(ctx, vm, err)
			}
			return a.killUnresponsive(ctx, rt, vm, err)
		}
		a.mu.Lock()
		rt = a.running[key]
		a.mu.Unlock()
	}

	// A deleted VM that still exists holds IncarnationFinalizer: its incarnation is stopped like
	// on a stop request and its exit reported once its QEMU is gone, which lets the VM (and its
	// disks) go. One that no longer exists (or holds no finalizer) is just stopped.
	if vm == nil || vm.Status.Node != a.opts.Node {
		if rt != nil {
			return a.finishStop(ctx, rt, nil, "")
		}
		return nil
	}
	inc := vm.Status.Incarnation
	if rt != nil && (rt.incarnation != inc || rt.uid != string(vm.UID)) {
		return a.finishStop(ctx, rt, nil, "")
	}
	if vm.IncarnationEnded() {
		return nil
	}
	deleted := vm.DeletionTimestamp != nil
	want := !deleted && vm.WantsRunning() && vm.Status.RestartIncarnation != inc
	if rt == nil {
		switch vm.Status.Phase {
		case apps.VMScheduled, apps.VMStarting:
			if deleted {
				return a.reportExit(ctx, vm, apps.ExitStopped, "deleted before it started")
			}
			if !want {
				return a.reportExit(ctx, vm, apps.ExitStopped, "stopped before it started")
			}
			return a.start(ctx, vm)
		case apps.VMRunning, apps.VMStopping:
			// No incarnation is registered (e.g. a run directory left without a readable state):
			// its QEMU is gone only if the run directory's lock says so. An exit reported while
			// it lives would let the next incarnation start, perhaps on another node, on the
			// same disks.
			runDir := a.runDir(string(vm.UID))
			if alive, err := qemu.Alive(runDir); alive || err != nil {
				if err == nil {
					err = fmt.Errorf("a process holds %s, which the agent has no state of", filepath.Join(runDir, "qemu.lock"))
				}
				a.queue.AddAfter(key, attachRetryMax)
				return a.reportUnresponsive(ctx, vm, err)
			}
			return a.reportExit(ctx, vm, apps.ExitFailed, "the QEMU process of this incarnation is gone")
		}
		return nil
	}

	rt.mu.Lock()
	stopping, stopped := rt.stopping, rt.stopped
	rt.mu.Unlock()
	switch {
	case stopped:
		msg := "stopped by Kumo"
		switch {
		case deleted:
			msg = "stopped: the VM was deleted"
		case vm.Status.RestartIncarnation == inc:
			msg = "restarted"
		}
		return a.finishStop(ctx, rt, vm, msg)
	case stopping:
		return nil
	case !want:
		a.stopAsync(rt)
		msg := "stopping the guest (ACPI power button, then quit)"
		if deleted {
			msg = "the VM was deleted: " + msg
		}
		return a.setPhase(ctx, vm, apps.VMStopping, metav1.ConditionFalse, "Stopping", msg)
	}
	select {
	case <-rt.vm.Exited():
		tail := logTail(rt.cfg.LogFile())
		if err := a.forget(rt); err != nil {
			return err
		}
		return a.reportExit(ctx, vm, apps.ExitFailed, "QEMU exited unexpectedly"+tail)
	default:
	}
	qctx, cancel := context.WithTimeout(ctx, statusTimeout)
	status, err := rt.vm.Status(qctx)
	cancel()
	if err != nil {
		select {
		case <-rt.vm.Exited():
			a.queue.Add(key)
			return nil
		default:
		}
		a.queue.AddAfter(key, attachRetryMax)
		return a.reportUnresponsive(ctx, vm, err)
	}
	switch status {
	case "shutdown":
		// The guest powered itself off (QEMU runs with -no-shutdown): end QEMU and record a clean exit.
		if err := rt.vm.Quit(ctx); err != nil {
			_ = rt.vm.Kill()
		}
		if err := a.forgetExited(rt); err != nil {
			return err
		}
		return a.reportExit(ctx, vm, apps.ExitSucceeded, "the guest shut down")
	case "guest-panicked", "internal-error":
		_ = rt.vm.Kill()
		if err := a.forgetExited(rt); err != nil {
			return err
		}
		return a.reportExit(ctx, vm, apps.ExitFailed, "the guest crashed (QEMU status "+status+")")
	case "running":
		if vm.Status.Phase != apps.VMRunning || unresponsive(vm) {
			return a.setPhase(ctx, vm, apps.VMRunning, metav1.ConditionTrue, "Running", fmt.Sprintf("incarnation %d runs on node %s (QEMU pid %d)", inc, a.opts.Node, rt.vm.PID()))
		}
		a.growDisks(ctx, vm, rt)
	}
	return nil
}

// finishStop ends an incarnation that was (being) stopped: waits for QEMU, removes the run
// directory and, when vm is given, reports the exit.
func (a *Agent) finishStop(ctx context.Context, rt *runtimeVM, vm *apps.VMInstance, msg string) error {
	rt.mu.Lock()
	stopped := rt.stopped
	rt.mu.Unlock()
	if !stopped {
		a.stopAsync(rt)
		if vm == nil {
			return nil // queued again when QEMU is gone
		}
	}
	if err := a.forget(rt); err != nil {
		return err
	}
	if vm == nil {
		return nil
	}
	return a.reportExit(ctx, vm, apps.ExitStopped, msg)
}

// statusTimeout bounds the query of a running QEMU's state in a sync.
const statusTimeout = 3 * time.Second

// exitTimeout bounds the wait for a QEMU to vanish after quit or SIGKILL.
const exitTimeout = 15 * time.Second

// forgetExited waits for the incarnation's QEMU to be gone, then forgets the incarnation.
func (a *Agent) forgetExited(rt *runtimeVM) error {
	select {
	case <-rt.vm.Exited():
		return a.forget(rt)
	case <-time.After(exitTimeout):
		return fmt.Errorf("QEMU of VM %s (pid %d) still present %s after quit/kill", rt.key, rt.vm.PID(), exitTimeout)
	}
}

// killUnresponsive ends an incarnation that is to stop (stop, restart, deletion, a newer
// incarnation) while its QEMU does not answer: after stopGrace without an answer, the QEMU is
// killed, and once its lock is free the incarnation ends. vm is the VM when this incarnation is
// still its current one.
func (a *Agent) killUnresponsive(ctx context.Context, rt *runtimeVM, vm *apps.VMInstance, cause error) error {
	if silent := time.Since(rt.unresponsiveSince); silent < stopGrace {
		if vm != nil {
			return a.reportUnresponsive(ctx, vm, cause)
		}
		return nil
	}
	err := qemu.KillRunDir(rt.dir)
	if err != nil && !errors.Is(err, qemu.ErrNotRunning) {
		return fmt.Errorf("stop VM %s: %w", rt.key, err)
	}
	slog.Warn("killed a QEMU that did not answer", "vm", rt.key, "incarnation", rt.incarnation, "silent_for", stopGrace, "cause", cause)
	deadline := time.Now().Add(exitTimeout)
	for {
		alive, err := qemu.Alive(rt.dir)
		if err == nil && !alive {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("stop VM %s: its QEMU still holds %s %s after SIGKILL (%v)", rt.key, rt.dir, exitTimeout, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err := a.forget(rt); err != nil {
		return err
	}
	if vm == nil {
		return nil
	}
	msg := "stopped by Kumo (its QEMU did not answer and was killed)"
	if vm.Status.RestartIncarnation == rt.incarnation {
		msg = "restarted (its QEMU did not answer and was killed)"
	}
	return a.reportExit(ctx, vm, apps.ExitStopped, msg)
}

// reasonUnresponsive marks a VM whose QEMU is alive (or may be) but does not answer.
const reasonUnresponsive = "QEMUUnresponsive"

func unresponsive(vm *apps.VMInstance) bool {
	c := meta.FindStatusCondition(vm.Status.Conditions, apps.ConditionReady)
	return c != nil && c.Reason == reasonUnresponsive
}

// reportUnresponsive reports the VM's state as unknown (Ready=Unknown): its QEMU does not answer,
// so it is neither running nor gone as far as the agent can tell.
func (a *Agent) reportUnresponsive(ctx context.Context, vm *apps.VMInstance, cause error) error {
	if unresponsive(vm) {
		return nil
	}
	return a.updateStatus(ctx, vm, func(cur *apps.VMInstance) {
		meta.SetStatusCondition(&cur.Status.Conditions, metav1.Condition{Type: apps.ConditionReady, Status: metav1.ConditionUnknown,
			Reason: reasonUnresponsive, Message: fmt.Sprintf("the QEMU of incarnation %d on node %s does not answer: %v", cur.Status.Incarnation, a.opts.Node, cause), ObservedGeneration: cur.Generation})
	})
}

// start launches the VM's current incarnation.
func (a *Agent) start(ctx context.Context, vm *apps.VMInstance) error {
	vmKey := vm.Namespace + "/" + vm.Name
	if err := a.setPhase(ctx, vm, apps.VMStarting, metav1.ConditionFalse, "Starting", "opening disks and starting QEMU"); err != nil {
		return err
	}
	runDir := a.runDir(string(vm.UID))
	// Prove that no QEMU of this VM is alive on the node (one the agent lost track of) before
	// writing anything into its run directory.
	if alive, err := qemu.Alive(runDir); alive || err != nil {
		if err == nil {
			err = fmt.Errorf("a QEMU still holds %s", runDir)
		}
		return fmt.Errorf("start VM %s: %w", vmKey, err)
	}
	err := os.MkdirAll(runDir, 0o700)
	var key storage.Key
	if err == nil {
		key, err = a.writeDiskKey(ctx, vm, runDir)
	}
	// QEMU reads the key when it starts; it does not stay on disk.
	defer func() {
		if key.File != "" {
			os.Remove(key.File)
		}
	}()
	var cfg qemu.Config
	if err == nil {
		cfg, err = a.qemuConfig(ctx, vm, runDir, key)
	}
	if err == nil {
		seed := cloudinit.Seed{InstanceID: cloudinit.InstanceID(vm.Namespace, vm.Name, vm.Spec.CloudInitSeed), Hostname: vm.Name, UserData: vm.Spec.CloudInit, SSHKeys: vm.Spec.SSHKeys,
			DHCPAllInterfaces: vm.Spec.NetplanDHCP}
		err = seed.WriteISO(filepath.Join(cfg.RunDir, "cidata.iso"))
	}
	rt := &runtimeVM{key: vmKey, uid: string(vm.UID), incarnation: vm.Status.Incarnation, dir: cfg.RunDir, cfg: cfg}
	if err == nil {
		err = rt.saveState()
	}
	if err == nil {
		rt.vm, err = qemu.Start(ctx, cfg)
	}
	if err != nil {
		if alive, aerr := qemu.Alive(runDir); alive || aerr != nil {
			// Start refused because a QEMU appeared meanwhile (or the lock cannot be read): leave it.
			return fmt.Errorf("start VM %s: %w (QEMU lock of %s held or unreadable: %v)", vmKey, err, runDir, aerr)
		}
		if rt.dir != "" {
			a.keepLogs(rt) // QEMU's complaint, for later reading
		}
		os.RemoveAll(runDir)
		slog.Warn("VM start failed", "vm", vmKey, "incarnation", vm.Status.Incarnation, "err", err)
		return a.reportExit(ctx, vm, apps.ExitFailed, "start failed: "+err.Error())
	}
	a.mu.Lock()
	a.running[vmKey] = rt
	a.mu.Unlock()
	a.connectConsole(rt)
	a.watch(rt)
	slog.Info("VM started", "vm", vmKey, "incarnation", rt.incarnation, "pid", rt.vm.PID())
	return a.setPhase(ctx, vm, apps.VMRunning, metav1.ConditionTrue, "Running", fmt.Sprintf("incarnation %d runs on node %s (QEMU pid %d)", rt.incarnation, a.opts.Node, rt.vm.PID()))
}

// updateStatus changes the VM's status for incarnation inc, retrying on conflicts; it gives up
// silently when the VM moved on to another incarnation or is gone.
func (a *Agent) updateStatus(ctx context.Context, vm *apps.VMInstance, mutate func(*apps.VMInstance)) error {
	// The node reads its VMs only through its watch (it may not get VMs by name), so a
	// conflict is retried against the watch cache, which catches up within the back-off.
	inc := vm.Status.Incarnation
	key := vm.Namespace + "/" + vm.Name
	cur := vm.DeepCopy()
	return retry.RetryOnConflict(retry.DefaultBackoff, func() error {
		if obj, ok, _ := a.vms.GetStore().GetByKey(key); ok && obj.(*apps.VMInstance).ResourceVersion != "" {
			if c := obj.(*apps.VMInstance); resourceVersionNewer(c.ResourceVersion, cur.ResourceVersion) {
				cur = c.DeepCopy()
			}
		} else if !ok {
			return nil
		}
		if cur.Status.Node != a.opts.Node || cur.Status.Incarnation != inc || cur.UID != vm.UID {
			return nil
		}
		next := cur.DeepCopy()
		mutate(next)
		err := a.c.Apps.Put().Namespace(next.Namespace).Resource("vminstances").Name(next.Name).SubResource("status").Body(next).Do(ctx).Into(next)
		if err == nil {
			cur = next
		}
		if apierrors.IsNotFound(err) {
			return nil
		}
		return err
	})
}

func (a *Agent) setPhase(ctx context.Context, vm *apps.VMInstance, phase apps.VMPhase, ready metav1.ConditionStatus, reason, msg string) error {
	return a.updateStatus(ctx, vm, func(cur *apps.VMInstance) {
		cur.Status.Phase = phase
		meta.SetStatusCondition(&cur.Status.Conditions, metav1.Condition{Type: apps.ConditionReady, Status: ready, Reason: reason, Message: msg, ObservedGeneration: cur.Generation})
	})
}

// reportExit records the end of the current incarnation; the server's lifecycle controller
// then releases the node and decides whether a new incarnation starts.
func (a *Agent) reportExit(ctx context.Context, vm *apps.VMInstance, reason apps.ExitReason, msg string) error {
	slog.Info("incarnation ended", "vm", vm.Namespace+"/"+vm.Name, "incarnation", vm.Status.Incarnation, "reason", reason, "message", msg)
	return a.updateStatus(ctx, vm, func(cur *apps.VMInstance) {
		cur.Status.LastExit = &apps.IncarnationExit{Incarnation: cur.Status.Incarnation, Node: a.opts.Node, Reason: reason, Message: msg, Time: metav1.Now()}
		cur.Status.Phase = apps.VMStopped
		condReason := string(reason)
		if reason == apps.ExitFailed {
			cur.Status.Phase = apps.VMFailed
		}
		meta.SetStatusCondition(&cur.Status.Conditions, metav1.Condition{Type: apps.ConditionReady, Status: metav1.ConditionFalse, Reason: condReason, Message: msg, ObservedGeneration: cur.Generation})
	})
}

// qemuConfig turns the VM's intent into QEMU's configuration: size from spec.resources or the
// instance type, devices from the profile (each disk's bus may override it), firmware from the
// profile or spec.firmware, disks prepared by their storage drivers in boot order.
func (a *Agent) qemuConfig(ctx context.Context, vm *apps.VMInstance, runDir string, key storage.Key) (qemu.Config, error) {
	size, ok := vm.Spec.ExplicitSize()
	if !ok {
		obj, found, _ := a.types.GetStore().GetByKey(vm.Spec.InstanceType)
		if !found {
			return qemu.Config{}, fmt.Errorf("instance type %s does not exist", vm.Spec.InstanceType)
		}
		it := obj.(*kumo.InstanceType)
		size = apps.Size{CPUs: int64(it.Spec.CPUs), Sockets: 1, Memory: it.Spec.Memory.Value()}
	}
	profile := kumo.BuiltinInstanceProfiles()[0].Spec
	if vm.Spec.InstanceProfile != "" {
		obj, ok, _ := a.profiles.GetStore().GetByKey(vm.Spec.InstanceProfile)
		if !ok {
			return qemu.Config{}, fmt.Errorf("instance profile %s does not exist", vm.Spec.InstanceProfile)
		}
		profile = obj.(*kumo.InstanceProfile).Spec
	}
	cfg := qemu.Config{
		Name: vm.Namespace + "_" + vm.Name, UUID: string(vm.UID), Binary: a.opts.QEMU, Accel: a.accel,
		Machine: profile.Machine, CPUs: int(size.CPUs), Sockets: int(size.Sockets), MemoryMiB: size.Memory >> 20,
		CPUModel: vm.Spec.CPUModel,
		Firmware: qemu.Firmware(profile.Firmware), Clock: profile.Clock, Tablet: profile.Tablet, HyperV: profile.HyperV,
		RunDir: runDir,
	}
	if fw := vm.Spec.Firmware; fw != nil {
		if fw.Bootloader != "" {
			cfg.Firmware = qemu.Firmware(fw.Bootloader)
		}
		cfg.SecureBoot = fw.SecureBoot
		if fw.EFIPersistent {
			cfg.UEFIVars = a.uefiVarsFile(vm)
		}
	}
	for i, ref := range vm.Spec.Disks {
		// Disks are prepared by the disk queue before the VM is scheduled; here they are only
		// opened: a start never creates or imports a disk, and never marks one Failed.
		d, err := a.openDisk(ctx, vm.Namespace, ref.Name, key)
		if err != nil {
			return qemu.Config{}, err
		}
		bus := diskBus(ref.Bus, profile)
		if d.optical {
			bus = opticalBus(ref.Bus, profile)
		}
		disk := qemu.Disk{ID: fmt.Sprintf("disk%d", i), Name: ref.Name, Path: d.vol.Path, Driver: d.vol.Driver, Format: d.vol.Format,
			Bus: bus, CDROM: d.optical, ReadOnly: d.optical, BootIndex: i + 1, KeyFile: d.vol.KeyFile}
		if r := d.vol.RBD; r != nil {
			disk.Path = ""
			disk.RBD = &qemu.RBDImage{Pool: r.Pool, Namespace: r.Namespace, Image: r.Image, Conf: r.Conf, User: r.User}
		}
		cfg.Disks = append(cfg.Disks, disk)
	}
	cfg.Disks = append(cfg.Disks, seedDisk(cfg.RunDir, profile))
	return cfg, cfg.Validate()
}

// seedDisk attaches the NoCloud seed where the guest's kernel sees it. Linux guests get a
// read-only virtio disk, as KubeVirt does: cloud kernels (Debian's linux-image-cloud-amd64) have
// virtio but no AHCI driver, so a CD-ROM on q35's AHCI controller is invisible to them. Windows
// (cloudbase-init looks for a CD-ROM and has no virtio driver out of the box) keeps a SATA CD-ROM.
func seedDisk(runDir string, profile kumo.InstanceProfileSpec) qemu.Disk {
	seed := qemu.Disk{ID: "cidata", Path: filepath.Join(runDir, "cidata.iso"), Driver: "file", Format: "raw", ReadOnly: true}
	if profile.OSType == kumo.OSWindows {
		seed.Bus, seed.CDROM = qemu.BusSATA, true
	} else {
		seed.Bus = qemu.BusVirtio
	}
	return seed
}

// diskBus is the bus of a disk: the one the VM names for it, else the profile's.
func diskBus(bus apps.DiskBus, profile kumo.InstanceProfileSpec) string {
	if bus != "" {
		return string(bus)
	}
	return profile.DiskBus
}

// opticalBus is the bus of a CD-ROM. A CD-ROM cannot be a virtio-blk device, and q35's AHCI
// controller is invisible to cloud kernels, so CD-ROMs go to virtio-scsi (scsi-cd, which SeaBIOS
// and OVMF boot from) unless the VM or its profile asks for SATA (Windows installers).
func opticalBus(bus apps.DiskBus, profile kumo.InstanceProfileSpec) string {
	if bus == apps.BusSATA || (bus == "" && profile.DiskBus == qemu.BusSATA) {
		return qemu.BusSATA
	}
	return qemu.BusSCSI
}

// uefiVarsFile is where a VM with firmware.efiPersistent keeps its UEFI variables on this node:
// outside its run directory, so that they survive the end of an incarnation.
func (a *Agent) uefiVarsFile(vm *apps.VMInstance) string {
	return filepath.Join(a.opts.DataDir, "efivars", vm.Namespace, vm.Name+"-"+string(vm.UID)+".fd")
}

func logTail(path string) string {
	data, err := os.ReadFile(path)
	if err != nil || len(strings.TrimSpace(string(data))) == 0 {
		return ""
	}
	const max = 400
	s := strings.TrimSpace(string(data))
	if len(s) > max {
		s = "..." + s[len(s)-max:]
	}
	return ": " + s
}

// resourceVersionNewer compares etcd revisions (decimal strings).
func resourceVersionNewer(a, b string) bool {
	if len(a) != len(b) {
		return len(a) > len(b)
	}
	return a > b
}
