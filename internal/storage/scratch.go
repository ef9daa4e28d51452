package storage

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// Scratch is a private directory for the temporary files of one operation (a disk being made,
// an image being downloaded). The operation holds an flock on the directory's lock file for its
// whole life; the kernel drops the lock when the process dies, so SweepScratch can tell the
// leftovers of a crash from the files of an operation still running, without guessing by age.
type Scratch struct {
	Dir  string
	lock *os.File
}

const scratchLock = ".lock"

// NewScratch makes a scratch directory parent/<prefix><random> and locks it.
func NewScratch(parent, prefix string) (*Scratch, error) {
	if err := os.MkdirAll(parent, 0o700); err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp(parent, prefix)
	if err != nil {
		return nil, fmt.Errorf("scratch directory under %s: %w", parent, err)
	}
	// The lock file is locked before it takes its name: a sweep that finds the directory sees
	// either no lock file (being set up) or a held lock, never a free lock it could take first
	// and then remove the directory of a running operation.
	f, err := os.OpenFile(filepath.Join(dir, scratchLock+".new"), os.O_CREATE|os.O_EXCL|os.O_RDWR, 0o600)
	if err == nil {
		err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			beforeScratchLockNamed(dir)
			err = os.Rename(filepath.Join(dir, scratchLock+".new"), filepath.Join(dir, scratchLock))
		}
		if err != nil {
			f.Close()
		}
	}
	if err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("lock scratch directory %s: %w", dir, err)
	}
	return &Scratch{Dir: dir, lock: f}, nil
}

// beforeScratchLockNamed runs between the lock being taken and the lock file being named; tests
// sweep there.
var beforeScratchLockNamed = func(dir string) {}

// Path is a file of the scratch directory.
func (s *Scratch) Path(name string) string { return filepath.Join(s.Dir, name) }

// Close removes the directory and everything in it.
func (s *Scratch) Close() error {
	err := os.RemoveAll(s.Dir)
	s.lock.Close()
	return err
}

// SweepScratch removes the scratch directories parent/<prefix>* whose operation is gone (their
// lock is free) and returns how many it removed. A directory whose lock is held is left alone.
func SweepScratch(parent, prefix string) (int, error) {
	entries, err := os.ReadDir(parent)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	removed := 0
	for _, e := range entries {
		if !e.IsDir() || !strings.HasPrefix(e.Name(), prefix) {
			continue
		}
		dir := filepath.Join(parent, e.Name())
		f, err := os.OpenFile(filepath.Join(dir, scratchLock), os.O_RDWR, 0)
		if errors.Is(err, fs.ErrNotExist) {
			continue // being set up right now (NewScratch locks right after making it)
		}
		if err != nil {
			return removed, err
		}
		if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
			f.Close()
			if errors.Is(err, syscall.EWOULDBLOCK) {
				continue // its operation is running
			}
			return removed, fmt.Errorf("lock scratch directory %s: %w", dir, err)
		}
		err = os.RemoveAll(dir)
		f.Close()
		if err != nil {
			return removed, err
		}
		removed++
	}
	return removed, nil
}
