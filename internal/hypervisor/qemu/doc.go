// Package qemu runs one QEMU process per VM: typed configuration to arguments, a thin QMP client,
// process start/attach/stop, accelerator detection.
//
// The node agent builds a Config for each VM incarnation and calls Start, or Attach after its own
// restart, then drives the VM through its QMP Monitor. What the package promises:
//
//   - Detached QEMU. Start runs QEMU in its own session with stdin on /dev/null and stdout and
//     stderr appended to RunDir/qemu.log, so the agent's death or restart never takes a guest with
//     it. Where cgroup v2 is writable, QEMU also moves to /sys/fs/cgroup/kumo.slice/<Name>, out of
//     the agent's cgroup, with cpu.max and memory.max limits; elsewhere that step is skipped.
//   - One directory per VM. RunDir (0700) holds qmp.sock, serial.sock, vnc.sock, qemu.pid (0600),
//     qemu.log and, for UEFI, the VM's own OVMF_VARS.fd, which survives restarts.
//   - Ready means QMP answers. Start returns once qmp_capabilities succeeded (at most startTimeout,
//     30 s; tens of milliseconds under TCG here). If QEMU exits or times out first, it is killed,
//     its sockets and pid file are removed, and the error ends with the tail of QEMU's log.
//   - Guest state is QMP state. -no-shutdown keeps QEMU alive when the guest powers off (status
//     "shutdown"); the pvpanic device turns a guest panic into status "guest-panicked".
//   - One QEMU per RunDir, proven by a lock. Start takes an flock on RunDir/qemu.lock and hands
//     the descriptor to QEMU, which holds it for its whole life (the kernel drops it however QEMU
//     ends). Start refuses while the lock is held; Alive reports it; Attach never answers
//     ErrNotRunning while it is held: a QEMU that is frozen (SIGSTOP) or whose pid file is gone
//     is ErrUnresponsive, for the caller to retry, never to replace.
//   - Every QMP command has a deadline: the caller's context, else DefaultCommandTimeout (10 s).
//     Callers queued behind a command in flight give up when their own context ends.
//   - Every QMP command the agent issues is a typed method here (Status, Powerdown, Quit,
//     GrowDisk, BlockResize, BlockNodeSizes); disks are addressed by the Disk.ID recorded in the
//     Config the QEMU was started with (Config.DiskByName finds it from the caller's name).
//   - No mistaken identity. Attach accepts the pid file's PID only if /proc shows QEMU serving this
//     RunDir's QMP socket; signals go through pidfds. QEMU serves one QMP client at a time, so the
//     previous connection must be closed (or its process dead) before Attach.
//   - Stop always ends the process: ACPI powerdown, the caller's grace period, QMP quit (5 s), then
//     SIGKILL; it returns once the process is gone and leaves only the log and UEFI variables.
//   - KVM only when it really works. ProbeAccelerator boots a generated boot sector that enters long
//     mode and runs a busy loop; on hosts where nested KVM opens but crawls, it falls back to TCG.
package qemu
