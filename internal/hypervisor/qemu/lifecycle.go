package qemu

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Timeouts of stopping QEMU.
const (
	// stopPollInterval is how often Stop asks QEMU whether the guest has shut down.
	stopPollInterval = 200 * time.Millisecond
	// quitTimeout bounds the wait for QEMU to exit after QMP quit.
	quitTimeout = 5 * time.Second
	// killTimeout bounds the wait for QEMU to vanish after SIGKILL.
	killTimeout = 10 * time.Second
	// qmpCommandTimeout bounds one QMP command issued by Stop itself.
	qmpCommandTimeout = 2 * time.Second
)

// QMP run states (query-status "status") the agent acts on.
const (
	StatusRunning       = "running"
	StatusPaused        = "paused"
	StatusShutdown      = "shutdown"
	StatusGuestPanicked = "guest-panicked"
)

// Status returns QMP query-status "status": running, paused, shutdown, guest-panicked, ...
func (v *VM) Status(ctx context.Context) (string, error) {
	var st struct {
		Status string `json:"status"`
	}
	if err := v.mon.Execute(ctx, "query-status", nil, &st); err != nil {
		return "", fmt.Errorf("query status of VM %s: %w", v.paths.Name, err)
	}
	return st.Status, nil
}

// Powerdown presses the ACPI power button (QMP system_powerdown); the guest decides what to do.
func (v *VM) Powerdown(ctx context.Context) error {
	if err := v.mon.Execute(ctx, "system_powerdown", nil, nil); err != nil {
		return fmt.Errorf("powerdown VM %s: %w", v.paths.Name, err)
	}
	return nil
}

// Quit asks QEMU to exit at once (QMP quit), like pulling the plug.
func (v *VM) Quit(ctx context.Context) error {
	err := v.mon.Execute(ctx, "quit", nil, nil)
	if err != nil && errors.Is(err, ErrMonitorClosed) {
		// QEMU may close the connection before its reply arrives.
		select {
		case <-v.exited:
			return nil
		case <-time.After(quitTimeout):
		}
	}
	if err != nil {
		return fmt.Errorf("quit VM %s: %w", v.paths.Name, err)
	}
	return nil
}

// Stop ends the VM and waits until the process is gone: ACPI powerdown, up to grace for the guest
// to shut down (or QEMU to exit), then QMP quit, then SIGKILL. Sockets, pid file and cgroup are
// removed; the log stays. If ctx ends first, Stop goes straight to SIGKILL.
func (v *VM) Stop(ctx context.Context, grace time.Duration) error {
	defer func() {
		if v.gone() { // never remove the pid file of a live QEMU
			v.cleanup()
		}
	}()
	if v.gone() {
		return nil
	}
	began := time.Now()

	if err := v.qmp(ctx, v.Powerdown); err != nil {
		v.log.Warn("acpi powerdown failed, quitting", "err", err)
	} else if v.waitGuestShutdown(ctx, grace) {
		v.log.Info("guest shut down", "after", time.Since(began).Round(time.Millisecond))
	} else {
		v.log.Info("guest ignored acpi powerdown, quitting", "grace", grace)
	}

	if ctx.Err() == nil && !v.gone() {
		if err := v.qmp(ctx, v.Quit); err != nil {
			v.log.Warn("qmp quit failed, killing", "err", err)
		}
		if v.waitExit(ctx, quitTimeout) {
			return nil
		}
		v.log.Warn("qemu still running after quit, killing", "timeout", quitTimeout)
	}

	if err := v.Kill(); err != nil {
		return fmt.Errorf("stop VM %s: %w", v.paths.Name, err)
	}
	select {
	case <-v.exited:
		return nil
	case <-time.After(killTimeout):
		return fmt.Errorf("stop VM %s: pid %d still present %s after SIGKILL", v.paths.Name, v.pid, killTimeout)
	}
}

// qmp runs one of the VM's QMP wrappers with Stop's per-command timeout.
func (v *VM) qmp(ctx context.Context, fn func(context.Context) error) error {
	cctx, cancel := context.WithTimeout(ctx, qmpCommandTimeout)
	defer cancel()
	return fn(cctx)
}

// waitGuestShutdown waits up to grace for the guest to power off (QMP status "shutdown", kept by
// -no-shutdown) or QEMU to exit. It reports whether that happened.
func (v *VM) waitGuestShutdown(ctx context.Context, grace time.Duration) bool {
	deadline := time.NewTimer(grace)
	defer deadline.Stop()
	tick := time.NewTicker(stopPollInterval)
	defer tick.Stop()
	for {
		select {
		case <-v.exited:
			return true
		case <-deadline.C:
			return false
		case <-ctx.Done():
			return false
		case <-tick.C:
			cctx, cancel := context.WithTimeout(ctx, qmpCommandTimeout)
			st, err := v.Status(cctx)
			cancel()
			if err == nil && st == StatusShutdown {
				return true
			}
		}
	}
}

// waitExit waits up to timeout for the process to be gone.
func (v *VM) waitExit(ctx context.Context, timeout time.Duration) bool {
	select {
	case <-v.exited:
		return true
	case <-time.After(timeout):
		return false
	case <-ctx.Done():
		return false
	}
}

func (v *VM) gone() bool {
	select {
	case <-v.exited:
		return true
	default:
		return false
	}
}
