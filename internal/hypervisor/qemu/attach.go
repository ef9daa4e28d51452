package qemu

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

// Timeouts of re-attaching.
const (
	// attachTimeout bounds connecting to the QMP socket of a running QEMU. QEMU serves one QMP
	// client at a time: a previous connection that is still open makes Attach time out.
	attachTimeout = 10 * time.Second
	// exitPollInterval is how often /proc is checked for the exit of a QEMU that is not our child.
	exitPollInterval = 250 * time.Millisecond
)

// ErrUnresponsive means a QEMU of the RunDir is (or may be) alive but cannot be reached: its QMP
// monitor does not answer (a frozen or stopped process), or its lock is held while its pid file
// names no QEMU. It is never "not running": the caller must wait and retry, not start another.
var ErrUnresponsive = errors.New("qemu is alive but does not answer")

// Attach re-attaches to the QEMU serving runDir after the caller restarted. The pid file must name
// a live process whose command line is QEMU with this RunDir's QMP socket, so a reused PID is never
// mistaken for the VM. Returns an error wrapping ErrNotRunning only when no such QEMU can be alive:
// while the RunDir's lock is held (see Config.LockFile) the answer is ErrUnresponsive or another
// error, never ErrNotRunning.
func Attach(ctx context.Context, runDir string) (*VM, error) {
	abs, err := filepath.Abs(runDir)
	if err != nil {
		return nil, fmt.Errorf("attach to qemu in %s: %w", runDir, err)
	}
	paths := Config{RunDir: abs}
	held, lockErr := Alive(abs)
	// notRunning is the answer when the pid file names no live QEMU: the lock has the last word.
	notRunning := func(why string) error {
		switch {
		case lockErr != nil:
			return fmt.Errorf("attach to qemu in %s: %s, and whether its lock is held is unknown: %w", abs, why, lockErr)
		case held:
			return fmt.Errorf("attach to qemu in %s: %s, yet a process holds its lock %s: %w", abs, why, paths.LockFile(), ErrUnresponsive)
		}
		return fmt.Errorf("attach to qemu in %s: %s: %w", abs, why, ErrNotRunning)
	}
	pid, err := readPIDFile(paths.PIDFile())
	if errors.Is(err, os.ErrNotExist) {
		return nil, notRunning("no pid file")
	}
	if err != nil {
		return nil, notRunning(err.Error())
	}
	info, err := readProc(pid)
	if errors.Is(err, errNoProcess) || (err == nil && info.state == 'Z') {
		return nil, notRunning(fmt.Sprintf("pid %d has exited", pid))
	}
	if err != nil {
		return nil, fmt.Errorf("attach to qemu in %s: %w", abs, err)
	}
	if !isQEMUFor(info.cmdline, paths.QMPSocket()) {
		return nil, notRunning(fmt.Sprintf("pid %d is not its qemu", pid))
	}
	// FindProcess holds a pidfd from here on, so signals cannot reach a later owner of the PID.
	proc, err := os.FindProcess(pid)
	if err != nil {
		return nil, fmt.Errorf("attach to qemu in %s: %w", abs, err)
	}
	paths.Name = guestName(info.cmdline)

	v := &VM{
		pid:    pid,
		proc:   proc,
		paths:  paths,
		log:    slog.Default().With("vm", paths.Name, "pid", pid),
		exited: make(chan struct{}),
		cgroup: cgroupOf(pid),
	}
	stopWatch := make(chan struct{})
	go v.watchExit(info.startTime, stopWatch)

	actx, cancel := context.WithTimeout(ctx, attachTimeout)
	defer cancel()
	mon, err := DialMonitor(actx, paths.QMPSocket())
	if err != nil {
		close(stopWatch)
		if processGone(pid, info.startTime) {
			held, lockErr = Alive(abs)
			return nil, notRunning(fmt.Sprintf("pid %d exited", pid))
		}
		return nil, fmt.Errorf("attach to qemu in %s (pid %d): %w: %w", abs, pid, ErrUnresponsive, err)
	}
	v.mon = mon
	v.log.Info("attached to qemu")
	return v, nil
}

// watchExit closes v.exited once the process is gone, polling /proc because QEMU is not our child.
// It runs until then, or until stop is closed.
func (v *VM) watchExit(startTime uint64, stop <-chan struct{}) {
	tick := time.NewTicker(exitPollInterval)
	defer tick.Stop()
	for {
		if processGone(v.pid, startTime) {
			v.log.Info("qemu exited")
			close(v.exited)
			return
		}
		select {
		case <-tick.C:
		case <-stop:
			return
		}
	}
}

// KillRunDir sends SIGKILL to the QEMU serving runDir without going through its monitor: the way
// to end a QEMU that does not answer (ErrUnresponsive). The pid file's process is verified like
// Attach does and signalled through a pidfd. It returns an error wrapping ErrNotRunning when the
// pid file names no live QEMU of runDir; it does not wait (see Alive).
func KillRunDir(runDir string) error {
	abs, err := filepath.Abs(runDir)
	if err != nil {
		return fmt.Errorf("kill qemu in %s: %w", runDir, err)
	}
	paths := Config{RunDir: abs}
	pid, err := readPIDFile(paths.PIDFile())
	if err != nil {
		return fmt.Errorf("kill qemu in %s: pid file: %v: %w", abs, err, ErrNotRunning)
	}
	info, err := readProc(pid)
	if errors.Is(err, errNoProcess) || (err == nil && info.state == 'Z') {
		return fmt.Errorf("kill qemu in %s: pid %d has exited: %w", abs, pid, ErrNotRunning)
	}
	if err != nil {
		return fmt.Errorf("kill qemu in %s: %w", abs, err)
	}
	if !isQEMUFor(info.cmdline, paths.QMPSocket()) {
		return fmt.Errorf("kill qemu in %s: pid %d is not its qemu: %w", abs, pid, ErrNotRunning)
	}
	proc, err := os.FindProcess(pid)
	if err != nil {
		return fmt.Errorf("kill qemu in %s: %w", abs, err)
	}
	defer proc.Release()
	if processGone(pid, info.startTime) { // the PID changed hands before the pidfd was opened
		return fmt.Errorf("kill qemu in %s: pid %d has exited: %w", abs, pid, ErrNotRunning)
	}
	if err := proc.Signal(syscall.SIGKILL); err != nil {
		if errors.Is(err, os.ErrProcessDone) {
			return fmt.Errorf("kill qemu in %s: pid %d has exited: %w", abs, pid, ErrNotRunning)
		}
		return fmt.Errorf("kill qemu in %s (pid %d): %w", abs, pid, err)
	}
	return nil
}
