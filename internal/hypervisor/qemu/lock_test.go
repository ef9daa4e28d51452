package qemu

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestAFrozenQEMUIsNeverTakenForDead: a QEMU stopped with SIGSTOP does not answer QMP, yet it is
// alive and holds its run directory's lock. Attach must say "unresponsive", never "not running",
// even when its pid file is gone, and Start must refuse a second QEMU. Once the process ends, the
// lock is free and the answer becomes "not running".
func TestAFrozenQEMUIsNeverTakenForDead(t *testing.T) {
	requireQEMU(t)
	dir := shortTempDir(t)
	cfg := tinyConfig("vm-frozen", filepath.Join(dir, "run"), markerDisk(t, dir))
	v, _ := startTestVM(t, cfg)
	if err := v.Close(); err != nil { // the agent goes away
		t.Fatal(err)
	}
	if alive, err := Alive(cfg.RunDir); err != nil || !alive {
		t.Fatalf("Alive of a running QEMU = %v, %v", alive, err)
	}
	if err := syscall.Kill(v.PID(), syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	defer syscall.Kill(v.PID(), syscall.SIGCONT)

	attach := func() error {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		a, err := Attach(ctx, cfg.RunDir)
		if err == nil {
			a.Close()
		}
		return err
	}
	if err := attach(); !errors.Is(err, ErrUnresponsive) || errors.Is(err, ErrNotRunning) {
		t.Fatalf("Attach to a frozen QEMU = %v, want ErrUnresponsive", err)
	}
	// Even with its pid file gone, the lock keeps it from being declared dead.
	if err := os.Rename(cfg.PIDFile(), cfg.PIDFile()+".hidden"); err != nil {
		t.Fatal(err)
	}
	if err := attach(); !errors.Is(err, ErrUnresponsive) || errors.Is(err, ErrNotRunning) {
		t.Fatalf("Attach without pid file while the lock is held = %v, want ErrUnresponsive", err)
	}
	if w, err := Start(context.Background(), cfg); err == nil || !strings.Contains(err.Error(), "already running") {
		if w != nil {
			w.Kill()
		}
		t.Fatalf("Start next to a frozen QEMU = %v, want an already-running error", err)
	}
	if err := os.Rename(cfg.PIDFile()+".hidden", cfg.PIDFile()); err != nil {
		t.Fatal(err)
	}

	// Thawed, it is attached again: same process.
	if err := syscall.Kill(v.PID(), syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	var a *VM
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		var err error
		a, err = Attach(ctx, cfg.RunDir)
		cancel()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Attach after SIGCONT: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if a.PID() != v.PID() {
		t.Fatalf("attached pid %d, started %d", a.PID(), v.PID())
	}
	if err := a.Kill(); err != nil {
		t.Fatal(err)
	}
	<-a.Exited()
	if alive, err := Alive(cfg.RunDir); err != nil || alive {
		t.Fatalf("Alive after the QEMU was killed = %v, %v", alive, err)
	}
	if err := attach(); !errors.Is(err, ErrNotRunning) {
		t.Fatalf("Attach after the QEMU was killed = %v, want ErrNotRunning", err)
	}
}

// TestKillRunDirEndsAFrozenQEMU: a QEMU that answers nothing is ended without its monitor; its lock
// is free afterwards. A run directory without a live QEMU is "not running".
func TestKillRunDirEndsAFrozenQEMU(t *testing.T) {
	requireQEMU(t)
	dir := shortTempDir(t)
	cfg := tinyConfig("vm-kill", filepath.Join(dir, "run"), markerDisk(t, dir))
	v, _ := startTestVM(t, cfg)
	if err := syscall.Kill(v.PID(), syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	if err := KillRunDir(cfg.RunDir); err != nil {
		t.Fatalf("KillRunDir: %v", err)
	}
	select {
	case <-v.Exited():
	case <-time.After(killTimeout):
		t.Fatal("QEMU still present after KillRunDir")
	}
	if alive, err := Alive(cfg.RunDir); err != nil || alive {
		t.Fatalf("Alive after KillRunDir = %v, %v", alive, err)
	}
	if err := KillRunDir(cfg.RunDir); !errors.Is(err, ErrNotRunning) {
		t.Fatalf("KillRunDir without a QEMU = %v, want ErrNotRunning", err)
	}
}
