package qemu

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"
)

// Timeouts of starting QEMU.
const (
	// startTimeout bounds the wait for QMP to answer after QEMU was started; TCG on a loaded
	// 2-core machine is the slow case.
	startTimeout = 30 * time.Second
	// qmpDialTimeout bounds one connection attempt (connect, greeting, capabilities).
	qmpDialTimeout = 2 * time.Second
	// qmpPollInterval is the pause between connection attempts while QEMU is starting.
	qmpPollInterval = 20 * time.Millisecond
	// abortKillTimeout bounds the wait for a QEMU killed after a failed start.
	abortKillTimeout = 10 * time.Second
)

// logTailBytes and logTailLines bound how much of QEMU's log goes into a start error.
const (
	logTailBytes = 4096
	logTailLines = 5
)

// ErrNotRunning means there is no live QEMU for a RunDir.
var ErrNotRunning = errors.New("qemu is not running")

// VM is a running (or exited) QEMU process.
type VM struct {
	pid    int
	proc   *os.Process
	paths  Config // only RunDir and Name are set: socket and file locations
	log    *slog.Logger
	mon    *Monitor
	cgroup string

	exited chan struct{} // closed when the process is gone
}

// PID is QEMU's process id.
func (v *VM) PID() int { return v.pid }

// RunDir is the VM's run directory.
func (v *VM) RunDir() string { return v.paths.RunDir }

// CgroupPath is the cgroup v2 directory QEMU was placed in, "" when cgroups are not used.
func (v *VM) CgroupPath() string { return v.cgroup }

// Exited is closed when the QEMU process is gone; QEMU started by another process is watched
// through /proc. It keeps working after Close.
func (v *VM) Exited() <-chan struct{} { return v.exited }

// Events delivers the monitor's QMP events (SHUTDOWN, RESET, STOP, RESUME, GUEST_PANICKED, ...).
func (v *VM) Events() <-chan Event { return v.mon.Events() }

// Close closes the QMP connection and leaves QEMU running.
func (v *VM) Close() error {
	if err := v.mon.Close(); err != nil {
		return fmt.Errorf("close VM %s: %w", v.paths.Name, err)
	}
	return nil
}

// Start starts QEMU for cfg, detached from the caller (own session, stdin /dev/null, output appended
// to cfg.LogFile()), and returns once QMP answers. The guest runs immediately. On failure QEMU is
// killed, its sockets and pid file removed, and the error carries the tail of QEMU's log.
func Start(ctx context.Context, cfg Config) (*VM, error) {
	cfg = cfg.withDefaults()
	args, err := cfg.Args()
	if err != nil {
		return nil, err
	}
	lock, err := prepareRunDir(&cfg)
	if err != nil {
		return nil, fmt.Errorf("start VM %s: %w", cfg.Name, err)
	}
	began := time.Now()
	v, logStart, exitStatus, err := launch(&cfg, args, lock)
	// QEMU holds its own descriptor of the lock from now on (or failed to start).
	lock.Close()
	if err != nil {
		return nil, fmt.Errorf("start VM %s: %w", cfg.Name, err)
	}
	v.cgroup = placeInCgroup(&cfg, v.pid)

	mon, err := waitForQMP(ctx, cfg.QMPSocket(), v.exited)
	if err != nil {
		v.abort()
		if errors.Is(err, errExitedEarly) {
			err = fmt.Errorf("qemu exited (%s)", <-exitStatus)
		}
		if tail := logTail(cfg.LogFile(), logStart); tail != "" {
			err = fmt.Errorf("%w: %s", err, tail)
		}
		return nil, fmt.Errorf("start VM %s: %w", cfg.Name, err)
	}
	v.mon = mon
	// QEMU created these with the agent's umask; RunDir (0700) already kept others out meanwhile.
	for _, f := range []string{cfg.QMPSocket(), cfg.SerialSocket(), cfg.VNCSocket(), cfg.PIDFile()} {
		if err := os.Chmod(f, 0o600); err != nil {
			v.log.Warn("restrict permissions", "file", f, "err", err)
		}
	}
	v.log.Info("qemu started", "qmp_ready_after", time.Since(began).Round(time.Millisecond))
	return v, nil
}

// prepareRunDir creates RunDir (0700), takes its lock (refusing a RunDir whose QEMU still runs),
// removes what a dead incarnation left behind and provides the UEFI variable store. The caller
// passes the returned lock to QEMU and closes its own copy.
func prepareRunDir(cfg *Config) (*os.File, error) {
	if err := os.MkdirAll(cfg.RunDir, 0o700); err != nil {
		return nil, fmt.Errorf("create run dir: %w", err)
	}
	if err := os.Chmod(cfg.RunDir, 0o700); err != nil {
		return nil, fmt.Errorf("restrict run dir: %w", err)
	}
	lock, err := takeRunDirLock(cfg.RunDir)
	if errors.Is(err, errLockHeld) {
		return nil, fmt.Errorf("qemu already running in %s: %w", cfg.RunDir, err)
	}
	if err != nil {
		return nil, err
	}
	// A QEMU started before run directories had locks.
	if pid, ok := liveQEMU(cfg.RunDir); ok {
		lock.Close()
		return nil, fmt.Errorf("qemu already running in %s (pid %d)", cfg.RunDir, pid)
	}
	removeRuntimeFiles(cfg)
	if cfg.Firmware == FirmwareUEFI {
		if err := prepareUEFIVars(cfg); err != nil {
			lock.Close()
			return nil, err
		}
	}
	return lock, nil
}

// launch starts the QEMU process and a goroutine that reaps it for as long as this process lives.
// QEMU inherits lock (as fd 3, which it never closes) and so holds the run directory's lock for its
// whole life. It returns the log offset where this incarnation's output begins and a channel that
// receives the exit status before Exited closes.
func launch(cfg *Config, args []string, lock *os.File) (*VM, int64, <-chan string, error) {
	logFile, err := os.OpenFile(cfg.LogFile(), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return nil, 0, nil, fmt.Errorf("open log: %w", err)
	}
	defer logFile.Close() // the child holds its own descriptor
	fmt.Fprintf(logFile, "%s kumo: starting %s %s\n", time.Now().UTC().Format(time.RFC3339Nano), cfg.Binary, strings.Join(args, " "))
	logStart, _ := logFile.Seek(0, io.SeekEnd)

	cmd := exec.Command(cfg.Binary, args...)
	cmd.Dir = cfg.RunDir
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	cmd.ExtraFiles = []*os.File{lock}
	// Own session: no controlling terminal, no signals to the caller's process group reach QEMU, so
	// the caller's death leaves it running. No Pdeathsig for the same reason.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return nil, 0, nil, fmt.Errorf("run %s: %w", cfg.Binary, err)
	}

	v := &VM{
		pid:    cmd.Process.Pid,
		proc:   cmd.Process,
		paths:  Config{Name: cfg.Name, RunDir: cfg.RunDir},
		log:    slog.Default().With("vm", cfg.Name, "pid", cmd.Process.Pid),
		exited: make(chan struct{}),
	}
	exitStatus := make(chan string, 1)
	go func() {
		status := "exit status 0"
		if err := cmd.Wait(); err != nil {
			status = err.Error()
		}
		v.log.Info("qemu exited", "status", status)
		exitStatus <- status
		close(v.exited)
	}()
	return v, logStart, exitStatus, nil
}

var errExitedEarly = errors.New("qemu exited")

// waitForQMP connects to the QMP socket once QEMU has created it and answers.
func waitForQMP(ctx context.Context, socket string, exited <-chan struct{}) (*Monitor, error) {
	deadline := time.NewTimer(startTimeout)
	defer deadline.Stop()
	var lastErr error
	for {
		dctx, cancel := context.WithTimeout(ctx, qmpDialTimeout)
		mon, err := DialMonitor(dctx, socket)
		cancel()
		if err == nil {
			return mon, nil
		}
		lastErr = err
		select {
		case <-exited:
			return nil, errExitedEarly
		case <-deadline.C:
			return nil, fmt.Errorf("qmp did not answer within %s: %w", startTimeout, lastErr)
		case <-ctx.Done():
			return nil, fmt.Errorf("wait for qmp: %w", ctx.Err())
		case <-time.After(qmpPollInterval):
		}
	}
}

// abort kills a QEMU that failed to start and removes what it left behind, except the log.
func (v *VM) abort() {
	if err := v.Kill(); err != nil {
		v.log.Warn("kill qemu after failed start", "err", err)
	}
	select {
	case <-v.exited:
	case <-time.After(abortKillTimeout):
		v.log.Error("qemu did not exit after SIGKILL", "timeout", abortKillTimeout)
	}
	v.cleanup()
}

// Kill sends SIGKILL. It does not wait; see Exited.
func (v *VM) Kill() error {
	select {
	case <-v.exited:
		return nil
	default:
	}
	// os.Process signals through a pidfd, so a reused PID cannot be hit.
	if err := v.proc.Signal(syscall.SIGKILL); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("kill qemu of VM %s (pid %d): %w", v.paths.Name, v.pid, err)
	}
	return nil
}

// cleanup removes the sockets, the pid file and the cgroup of an exited QEMU; the log stays.
func (v *VM) cleanup() {
	if v.mon != nil {
		v.mon.Close()
	}
	removeRuntimeFiles(&v.paths)
	if v.cgroup != "" {
		if err := removeCgroup(v.cgroup); err != nil {
			v.log.Warn("remove cgroup", "path", v.cgroup, "err", err)
		}
	}
}

// removeRuntimeFiles deletes what a QEMU incarnation leaves in RunDir besides its log and UEFI vars.
func removeRuntimeFiles(cfg *Config) {
	for _, f := range []string{cfg.QMPSocket(), cfg.SerialSocket(), cfg.VNCSocket(), cfg.PIDFile()} {
		if err := os.Remove(f); err != nil && !errors.Is(err, os.ErrNotExist) {
			slog.Warn("remove qemu runtime file", "file", f, "err", err)
		}
	}
}

// liveQEMU reports the PID of a live QEMU serving runDir, if any.
func liveQEMU(runDir string) (int, bool) {
	cfg := Config{RunDir: runDir}
	pid, err := readPIDFile(cfg.PIDFile())
	if err != nil {
		return 0, false
	}
	info, err := readProc(pid)
	if err != nil || info.state == 'Z' || !isQEMUFor(info.cmdline, cfg.QMPSocket()) {
		return 0, false
	}
	return pid, true
}

// logTail returns the last lines QEMU wrote to its log after offset, joined on one line.
func logTail(path string, offset int64) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return ""
	}
	from := max(offset, st.Size()-logTailBytes)
	buf := make([]byte, st.Size()-from)
	n, _ := f.ReadAt(buf, from)
	var lines []string
	for _, l := range strings.Split(string(buf[:n]), "\n") {
		if l = strings.TrimSpace(l); l != "" {
			lines = append(lines, l)
		}
	}
	if len(lines) > logTailLines {
		lines = lines[len(lines)-logTailLines:]
	}
	return strings.Join(lines, "; ")
}
