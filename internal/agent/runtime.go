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

	"kumo.dev/kumo/internal/hypervisor/qemu"
)

// runtimeVM is one incarnation running on this node.
type runtimeVM struct {
	key         string
	uid         string
	incarnation int64
	dir         string
	cfg         qemu.Config
	vm          *qemu.VM

	mu       sync.Mutex
	con      *console
	stopping bool
	stopped  bool
	stopErr  error
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
	go func() {
		for {
			select {
			case ev, ok := <-rt.vm.Events():
				if !ok {
					a.queue.Add(rt.key)
					return
				}
				slog.Debug("qemu event", "vm", rt.key, "event", ev.Name)
				a.queue.Add(rt.key)
			case <-rt.vm.Exited():
				a.queue.Add(rt.key)
				return
			}
		}
	}()
}

// reattach finds the QEMU processes this node left running (the agent restarted) and takes them
// back: same incarnation, no second QEMU. Run directories of dead processes are removed; the
// sync loop reports their incarnations as failed.
func (a *Agent) reattach(ctx context.Context) {
	dirs, _ := filepath.Glob(filepath.Join(a.opts.DataDir, "run", "*"))
	for _, dir := range dirs {
		data, err := os.ReadFile(filepath.Join(dir, "state.json"))
		var st state
		if err != nil || json.Unmarshal(data, &st) != nil {
			slog.Warn("run directory without state, removing", "dir", dir)
			os.RemoveAll(dir)
			continue
		}
		vm, err := qemu.Attach(ctx, dir)
		if err != nil {
			if !errors.Is(err, qemu.ErrNotRunning) {
				slog.Warn("re-attach QEMU", "vm", st.Key, "err", err)
			}
			os.RemoveAll(dir)
			a.queue.Add(st.Key)
			continue
		}
		rt := &runtimeVM{key: st.Key, uid: st.UID, incarnation: st.Incarnation, dir: dir, cfg: st.Config, vm: vm}
		if con, err := openConsole(rt.cfg.SerialSocket(), rt.serialLog()); err == nil {
			rt.con = con
		} else {
			slog.Warn("re-attach serial console", "vm", st.Key, "err", err)
		}
		a.mu.Lock()
		a.running[st.Key] = rt
		a.mu.Unlock()
		a.watch(rt)
		a.queue.Add(st.Key)
		slog.Info("re-attached VM", "vm", st.Key, "incarnation", st.Incarnation, "pid", vm.PID())
	}
}

// forget drops a stopped incarnation and removes its run directory.
func (a *Agent) forget(rt *runtimeVM) {
	a.mu.Lock()
	if a.running[rt.key] == rt {
		delete(a.running, rt.key)
	}
	a.mu.Unlock()
	if c := rt.console(); c != nil {
		c.close()
	}
	rt.vm.Close()
	if err := os.RemoveAll(rt.dir); err != nil {
		slog.Warn("remove run directory", "dir", rt.dir, "err", err)
	}
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
		rt.vm.Close()
	}
}
