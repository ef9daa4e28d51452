package lab

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/vishvananda/netns"
)

// startInNamespace starts cmd with its network namespace set to ns: the fork happens on an OS
// thread switched into ns, and the child keeps that thread's namespaces. The thread is never
// switched back: it stays locked, so the runtime discards it when the goroutine ends.
func startInNamespace(ns string, cmd *exec.Cmd) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		target, err := netns.GetFromName(ns)
		if err != nil {
			errc <- fmt.Errorf("open network namespace %s: %w", ns, err)
			return
		}
		defer target.Close()
		if err := netns.Set(target); err != nil {
			errc <- fmt.Errorf("enter network namespace %s: %w", ns, err)
			return
		}
		errc <- cmd.Start()
	}()
	return <-errc
}

// start launches p in its namespace, detached in a session of its own with its output appended
// to p.Log, and records its pid. A daemon that forks itself (p.PIDFile set) is waited for and
// its pid read from the pid file.
func start(ctx context.Context, p *Process) error {
	if err := os.MkdirAll(filepath.Dir(p.Log), 0o755); err != nil {
		return fmt.Errorf("log directory of %s: %w", p.Name, err)
	}
	logf, err := os.OpenFile(p.Log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("log of %s: %w", p.Name, err)
	}
	defer logf.Close()
	fmt.Fprintf(logf, "---- %s kumo-lab starts %s in %s: %s\n", time.Now().UTC().Format(time.RFC3339Nano), p.Name, p.Namespace, strings.Join(p.Argv, " "))
	cmd := exec.Command(p.Argv[0], p.Argv[1:]...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if p.PIDFile != "" {
		_ = os.Remove(p.PIDFile)
	}
	if err := startInNamespace(p.Namespace, cmd); err != nil {
		return fmt.Errorf("start %s in %s: %w", p.Name, p.Namespace, err)
	}
	if p.PIDFile == "" {
		p.PID = cmd.Process.Pid
		p.StartTime, _, _ = procStat(p.PID)
		go func() { _ = cmd.Wait() }() // reap it if it dies while we run
		return nil
	}
	// A forking daemon: its first process exits once the daemon is running.
	waitErr := make(chan error, 1)
	go func() { waitErr <- cmd.Wait() }()
	select {
	case err := <-waitErr:
		if err != nil {
			return fmt.Errorf("start %s: %w (see %s)", p.Name, err, p.Log)
		}
	case <-ctx.Done():
		_ = cmd.Process.Kill()
		return fmt.Errorf("start %s: %w", p.Name, ctx.Err())
	}
	for {
		if b, err := os.ReadFile(p.PIDFile); err == nil {
			if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && pid > 0 {
				p.PID = pid
				p.StartTime, _, _ = procStat(pid)
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s wrote no pid file %s: %w", p.Name, p.PIDFile, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// procStat returns a process's start time (clock ticks since boot) and state letter.
func procStat(pid int) (uint64, byte, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, err
	}
	// The command name is in parentheses and may hold spaces: fields start after the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, 0, fmt.Errorf("malformed /proc/%d/stat", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 20 {
		return 0, 0, fmt.Errorf("malformed /proc/%d/stat", pid)
	}
	st, err := strconv.ParseUint(f[19], 10, 64) // field 22 of stat
	return st, f[0][0], err
}

// Alive tells whether the process recorded in p still runs (same pid and start time, not a
// zombie).
func (p *Process) Alive() bool {
	if p == nil || p.PID <= 0 {
		return false
	}
	st, state, err := procStat(p.PID)
	return err == nil && st == p.StartTime && state != 'Z' && state != 'X'
}

// kill sends SIGKILL to p if it is still the recorded process.
func (p *Process) kill() bool {
	if !p.Alive() {
		return false
	}
	return syscall.Kill(p.PID, syscall.SIGKILL) == nil
}

// pidsIn lists the processes whose network namespace is the named one: for a node that is its
// agent and every QEMU the agent started (they inherit it), for a datacenter its server and
// Ceph daemons. It finds them whoever started them.
func pidsIn(ns string) ([]int, error) {
	ino, err := nsInode(ns)
	if err != nil {
		return nil, err
	}
	want := fmt.Sprintf("net:[%d]", ino)
	return scanProc(func(pid int) bool {
		link, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/net", pid))
		return err == nil && link == want
	})
}

// pidsMentioning lists processes whose command line contains s (the lab directory: a process
// left from a lab whose namespace is gone).
func pidsMentioning(s string) ([]int, error) {
	return scanProc(func(pid int) bool {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		return err == nil && bytes.Contains(b, []byte(s))
	})
}

func scanProc(match func(pid int) bool) ([]int, error) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil, fmt.Errorf("list processes: %w", err)
	}
	self, parent := os.Getpid(), os.Getppid()
	var out []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self || pid == parent {
			continue
		}
		if match(pid) {
			out = append(out, pid)
		}
	}
	return out, nil
}

// killAndWait SIGKILLs pids and waits (up to 10 s) until they are gone or zombies.
func killAndWait(pids []int) error {
	for _, pid := range pids {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		left := slices.DeleteFunc(slices.Clone(pids), func(pid int) bool {
			_, state, err := procStat(pid)
			return err != nil || state == 'Z' || state == 'X'
		})
		if len(left) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("processes %v still alive 10s after SIGKILL", left)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// commOf returns a process's command name, for reports.
func commOf(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	if err != nil {
		return "?"
	}
	return strings.TrimSpace(string(b))
}

// describe lists pids with their command names: "4242 kumod, 4250 qemu-system-x86".
func describe(pids []int) string {
	if len(pids) == 0 {
		return "nothing"
	}
	parts := make([]string, len(pids))
	for i, pid := range pids {
		parts[i] = fmt.Sprintf("%d %s", pid, commOf(pid))
	}
	return strings.Join(parts, ", ")
}

// ExecIn runs argv inside the named namespace with the given stdio and returns its error.
func ExecIn(ns string, argv []string, stdin, stdout, stderr *os.File) error {
	if len(argv) == 0 {
		return errors.New("exec: no command given")
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = stdin, stdout, stderr
	if err := startInNamespace(ns, cmd); err != nil {
		return err
	}
	return cmd.Wait()
}

// QEMUs lists the pids of the QEMU processes running in a node's namespace.
func QEMUs(s *State, node string) ([]int, error) {
	n, err := s.Node(node)
	if err != nil {
		return nil, err
	}
	pids, err := pidsIn(n.Namespace)
	if err != nil {
		return nil, err
	}
	return slices.DeleteFunc(pids, func(pid int) bool { return !strings.HasPrefix(commOf(pid), "qemu-system") }), nil
}
