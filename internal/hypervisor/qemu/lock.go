package qemu

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// lockFileName is the run-directory lock QEMU holds for its whole life (see takeRunDirLock).
const lockFileName = "qemu.lock"

// LockFile is the lock that proves a QEMU of this RunDir is alive: Start takes it (flock), hands
// the open descriptor to QEMU and closes its own copy, so the lock is held exactly as long as the
// QEMU process (or anything it passed the descriptor to) lives. The kernel releases it however
// QEMU ends, SIGKILL included.
func (c *Config) LockFile() string { return filepath.Join(c.RunDir, lockFileName) }

// errLockHeld means another process (a live QEMU, or a Start in progress) holds the lock.
var errLockHeld = errors.New("run directory lock is held")

// takeRunDirLock opens and locks RunDir's lock file without waiting. It returns errLockHeld when
// the lock is held.
func takeRunDirLock(runDir string) (*os.File, error) {
	path := (&Config{RunDir: runDir}).LockFile()
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open lock %s: %w", path, err)
	}
	if err := flock(f); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("lock %s: %w", path, errLockHeld)
		}
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	return f, nil
}

func flock(f *os.File) error {
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if !errors.Is(err, syscall.EINTR) {
			return err
		}
	}
}

// Alive tells whether a QEMU of runDir may be alive, from its lock: true while the lock is held
// (by QEMU, or by a Start still in progress), false when the lock is free or there is no lock
// file (runDir never held a QEMU started with a lock). An error means the answer is unknown and
// must not be taken for "not alive".
func Alive(runDir string) (bool, error) {
	path := (&Config{RunDir: runDir}).LockFile()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("open lock %s: %w", path, err)
	}
	defer f.Close() // closing the descriptor releases a lock taken through it
	switch err := flock(f); {
	case err == nil:
		return false, nil
	case errors.Is(err, syscall.EWOULDBLOCK):
		return true, nil
	default:
		return false, fmt.Errorf("probe lock %s: %w", path, err)
	}
}
