package agent

import (
	"fmt"
	"os"

	"syscall"
)

// localStorageReserve is the share of the local disks' filesystem kept out of allocatable: qcow2
// metadata, the golden-image cache, logs and scratch space of imports live there too.
const localStorageReserve = 10 // percent

// localStorage is the size of the filesystem holding dir (the local disks) and what local disks
// may take of it.
func localStorage(dir string) (capacity, allocatable int64, err error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return 0, 0, fmt.Errorf("local disk directory %s: %w", dir, err)
	}
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, 0, fmt.Errorf("size of the filesystem of %s: %w", dir, err)
	}
	capacity = int64(st.Blocks) * st.Bsize
	return capacity, capacity - capacity*localStorageReserve/100, nil
}
