package qemu

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
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

// Attach re-attaches to the QEMU serving runDir after the caller restarted. The pid file must name
// a live process whose command line is QEMU with this RunDir's QMP socket, so a reused PID is never
// mistaken for the VM. Returns an error wrapping ErrNotRunning when there is no such QEMU.
func Attach(ctx context.Context, runDir string) (*VM, error) {
	abs, err := filepath.Abs(runDir)
	if err != nil {
		return nil, fmt.Errorf("attach to qemu in %s: %w", runDir, err)
	}
	paths := Config{RunDir: abs}
	pid, err := readPIDFile(paths.PIDFile())
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("attach to qemu in %s: no pid file: %w", abs, ErrNotRunning)
	}
	if err != nil {
		return nil, fmt.Errorf("attach to qemu in %s: %v: %w", abs, err, ErrNotRunning)
	}
	info, err := readProc(pid)
	if errors.Is(err, errNoProcess) || (err == nil && info.state == 'Z') {
		return nil, fmt.Errorf("attach to qemu in %s: pid %d has exited: %w", abs, pid, ErrNotRunning)
	}
	if err != nil {
		return nil, fmt.Errorf("attach to qemu in %s: %w", abs, err)
	}
	if !isQEMUFor(info.cmdline, paths.QMPSocket()) {
		return nil, fmt.Errorf("attach to qemu in %s: pid %d is not its qemu: %w", abs, pid, ErrNotRunning)
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
			return nil, fmt.Errorf("attach to qemu in %s: pid %d exited: %w", abs, pid, ErrNotRunning)
		}
		return nil, fmt.Errorf("attach to qemu in %s (pid %d): %w", abs, pid, err)
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
