package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"kumo.dev/kumo/internal/hypervisor/qemu"
)

// Re-attaching to a QEMU that does not answer.
const (
	// attachAttemptTimeout bounds one attempt to reach a QEMU's monitor from a sync worker.
	attachAttemptTimeout = 2 * time.Second
	// attachRetryMin and attachRetryMax bound the back-off between attempts.
	attachRetryMin = 250 * time.Millisecond
	attachRetryMax = 5 * time.Second
)

// runtimeVM is one incarnation running on this node. vm is nil while the agent has not (yet)
// reached the incarnation's QEMU, which is then alive or unknown, never dead: the run directory
// stays and no other QEMU starts for the VM. Only the VM's sync (one worker at a time per VM)
// sets vm, under mu once the incarnation is registered; others read it with monitored.
type runtimeVM struct {
	key         string
	uid         string
	incarnation int64
	dir         string
	cfg         qemu.Config
	vm          *qemu.VM
	// attachRetry is the wait before the next attempt to reach an unattached QEMU;
	// unresponsiveSince is when the attempts began failing.
	attachRetry       time.Duration
	unresponsiveSince time.Time

	mu        sync.Mutex
	con       *console
	forgotten bool
	stopping  bool
	stopped   bool
	stopErr   error
}

// state is what a run directory remembers, so a restarted agent re-attaches to its QEMU.
type state struct {
	Key         string      `json:"key"`
	UID         string      `json:"uid"`
	Incarnation int64       `json:"incarnation"`
	Config      qemu.Config `json:"config"`
}

func (r *runtimeVM) serialLog() string {
	return filepath.Join(r.dir, fmt.Sprintf("serial-%d.log", r.incarnation))
}

// monitored is the incarnation's QEMU when the agent reaches it, else nil; for readers other
// than the VM's sync (metrics).
func (r *runtimeVM) monitored() *qemu.VM {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.vm
}

func (r *runtimeVM) console() *console {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.con
}

func (r *runtimeVM) saveState() error {
	data, err := json.Marshal(state{Key: r.key, UID: r.uid, Incarnation: r.incarnation, Config: r.cfg})
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(r.dir, "state.json"), data, 0o600)
}

// runDir is the run directory of a VM object; short, because unix socket paths are limited.
func (a *Agent) runDir(uid string) string {
	if len(uid) > 13 {
		uid = uid[:13]
	}
	return filepath.Join(a.opts.DataDir, "run", uid)
}

// watch queues the VM whenever QEMU reports something or exits.
func (a *Agent) watch(rt *runtimeVM) {
	vm := rt.vm
	go func() {
		for {
			select {
			case ev, ok := <-vm.Events():
				if !ok {
					a.queue.Add(rt.key)
					return
				}
				slog.Debug("qemu event", "vm", rt.key, "event", ev.Name)
				a.queue.Add(rt.key)
			case <-vm.Exited():
				a.queue.Add(rt.key)
				return
			}
		}
	}()
}

// connectConsole connects the incarnation's serial console in the background (QEMU may take a
// moment to create its socket); a worker never waits for it.
func (a *Agent) connectConsole(rt *runtimeVM) {
	go func() {
		con, err := openConsole(rt.cfg.SerialSocket(), rt.serialLog())
		if err != nil {
			slog.Warn("serial console", "vm", rt.key, "incarnation", rt.incarnation, "err", err)
			return
		}
		rt.mu.Lock()
		defer rt.mu.Unlock()
		if rt.forgotten || rt.con != nil {
			con.close()
			return
		}
		rt.con = con
	}()
}

// reattach finds the run directories this node left (the agent restarted) and registers their
// incarnations unattached; the sync workers then reach their QEMU (attach), or, when the QEMU
// is proven dead, end the incarnation. A run directory whose QEMU may be alive is never removed.
func (a *Agent) reattach() {
	dirs, _ := filepath.Glob(filepath.Join(a.opts.DataDir, "run", "*"))
	for _, dir := range dirs {
		data, err := os.ReadFile(filepath.Join(dir, "state.json"))
		var st state
		if err != nil || json.Unmarshal(data, &st) != nil {
			if alive, aerr := qemu.Alive(dir); alive || aerr != nil {
				slog.Error("run directory without state holds a live (or unknown) QEMU; leaving it", "dir", dir, "err", aerr)
				continue
			}
			slog.Warn("run directory without state, removing", "dir", dir)
			os.RemoveAll(dir)
			continue
		}
		rt := &runtimeVM{key: st.Key, uid: st.UID, incarnation: st.Incarnation, dir: dir, cfg: st.Config}
		a.mu.Lock()
		a.running[st.Key] = rt
		a.mu.Unlock()
		a.queue.Add(st.Key)
	}
}

// attach tries once to reach the QEMU of an unattached incarnation. It returns false when the
// QEMU is unresponsive (or its state unknown): the caller reports that and the VM is queued
// again after a bounded back-off. When the QEMU is proven dead the incarnation is forgotten
// (a.running no longer holds rt) and attach returns true.
func (a *Agent) attach(ctx context.Context, rt *runtimeVM) (bool, error) {
	actx, cancel := context.WithTimeout(ctx, attachAttemptTimeout)
	defer cancel()
	vm, err := qemu.Attach(actx, rt.dir)
	switch {
	case errors.Is(err, qemu.ErrNotRunning):
		slog.Info("QEMU of a previous run is gone", "vm", rt.key, "incarnation", rt.incarnation, "err", err)
		if err := a.forget(rt); err != nil {
			return false, err
		}
		return true, nil
	case err != nil:
		if rt.unresponsiveSince.IsZero() {
			rt.unresponsiveSince = time.Now()
		}
		rt.attachRetry = min(max(2*rt.attachRetry, attachRetryMin), attachRetryMax)
		a.queue.AddAfter(rt.key, rt.attachRetry)
		slog.Warn("QEMU does not answer; retrying", "vm", rt.key, "incarnation", rt.incarnation, "retry_in", rt.attachRetry, "err", err)
		return false, err
	}
	rt.mu.Lock()
	rt.vm = vm
	rt.mu.Unlock()
	rt.attachRetry, rt.unresponsiveSince = 0, time.Time{}
	a.connectConsole(rt)
	a.watch(rt)
	slog.Info("re-attached VM", "vm", rt.key, "incarnation", rt.incarnation, "pid", vm.PID())
	return true, nil
}

// forget drops an ended incarnation: keeps its logs (see keepLogs) and removes its run
// directory. The caller believes its QEMU gone; if the run directory's lock says otherwise (or
// cannot tell), nothing is removed, the incarnation stays registered unattached and forget
// returns an error.
func (a *Agent) forget(rt *runtimeVM) error {
	rt.mu.Lock()
	con := rt.con
	rt.con = nil
	rt.mu.Unlock()
	if con != nil {
		con.close()
	}
	if rt.vm != nil {
		rt.vm.Close()
	}
	if alive, err := qemu.Alive(rt.dir); alive || err != nil {
		rt.mu.Lock()
		rt.vm = nil
		rt.mu.Unlock()
		a.queue.AddAfter(rt.key, attachRetryMax)
		if err == nil {
			err = fmt.Errorf("a process still holds %s", filepath.Join(rt.dir, "qemu.lock"))
		}
		return fmt.Errorf("end incarnation %d of VM %s: its QEMU may be alive: %w", rt.incarnation, rt.key, err)
	}
	a.mu.Lock()
	if a.running[rt.key] == rt {
		delete(a.running, rt.key)
	}
	a.mu.Unlock()
	rt.mu.Lock()
	rt.forgotten = true
	rt.mu.Unlock()
	a.keepLogs(rt)
	if err := os.RemoveAll(rt.dir); err != nil {
		slog.Warn("remove run directory", "dir", rt.dir, "err", err)
	}
	return nil
}

// stopAsync stops an incarnation in the background (ACPI, then quit, then kill) and queues the VM
// when it is gone.
func (a *Agent) stopAsync(rt *runtimeVM) {
	rt.mu.Lock()
	if rt.stopping {
		rt.mu.Unlock()
		return
	}
	rt.stopping = true
	rt.mu.Unlock()
	go func() {
		err := rt.vm.Stop(context.Background(), stopGrace)
		rt.mu.Lock()
		rt.stopped, rt.stopErr = true, err
		rt.mu.Unlock()
		a.queue.Add(rt.key)
	}()
}

// detachAll closes the agent's connections and leaves every QEMU running.
func (a *Agent) detachAll() {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, rt := range a.running {
		if c := rt.console(); c != nil {
			c.close()
		}
		if rt.vm != nil {
			rt.vm.Close()
		}
	}
}
