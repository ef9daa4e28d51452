package qemu

import (
	"bufio"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// cgroup v2 limits, applied where the host allows.
const (
	// cgroupSlice groups all VM cgroups under the cgroup2 root, outside the agent's own cgroup, so
	// a service manager stopping the agent does not take the VMs with it.
	cgroupSlice = "kumo.slice"
	// cgroupMemoryOverheadMiB is added to the guest's memory for QEMU itself (device emulation,
	// block and VNC buffers, TCG's translation cache).
	cgroupMemoryOverheadMiB = 256
	// cgroupCPUPeriodUS is the cpu.max period; the quota is CPUs periods.
	cgroupCPUPeriodUS = 100000
	// cgroupRemoveTimeout bounds retries of removing a cgroup the kernel still sees populated just
	// after its process exited.
	cgroupRemoveTimeout = 2 * time.Second
	cgroupRemoveRetry   = 20 * time.Millisecond
	// cgroup2Magic is CGROUP2_SUPER_MAGIC from statfs(2).
	cgroup2Magic = 0x63677270
)

// cgroupRoot is the cgroup2 mount; a variable so tests can use a fake tree.
var cgroupRoot = "/sys/fs/cgroup"

// cgroupControllers are enabled for the VM cgroups when the parent offers them.
var cgroupControllers = []string{"cpu", "memory"}

var cgroupUnusableOnce sync.Once

// cgroupsUsable reports why cgroup v2 cannot be used, nil when it can.
func cgroupsUsable(root string) error {
	var fs syscall.Statfs_t
	if err := syscall.Statfs(root, &fs); err != nil {
		return fmt.Errorf("statfs %s: %w", root, err)
	}
	if fs.Type != cgroup2Magic {
		return fmt.Errorf("%s is not a cgroup2 mount (filesystem magic %#x)", root, fs.Type)
	}
	if err := syscall.Access(root, 0x2 /* W_OK */); err != nil {
		return fmt.Errorf("%s is not writable: %w", root, err)
	}
	return nil
}

// placeInCgroup puts QEMU into its own cgroup with CPU and memory limits and returns the cgroup's
// path, or "" when cgroups are not usable here (logged once) or placing failed (logged).
func placeInCgroup(cfg *Config, pid int) string {
	if err := cgroupsUsable(cgroupRoot); err != nil {
		cgroupUnusableOnce.Do(func() {
			slog.Info("cgroup v2 not usable, VMs run without cgroup limits", "reason", err)
		})
		return ""
	}
	path, err := setupCgroup(cgroupRoot, cfg, pid)
	if err != nil {
		slog.Warn("VM runs without cgroup limits", "vm", cfg.Name, "err", err)
		if path != "" {
			os.Remove(path)
		}
		return ""
	}
	return path
}

// setupCgroup creates ROOT/kumo.slice/NAME, limits it and moves pid in. On error the returned path
// is the cgroup created so far, if any, for the caller to remove.
func setupCgroup(root string, cfg *Config, pid int) (string, error) {
	slice := filepath.Join(root, cgroupSlice)
	if err := os.Mkdir(slice, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
		return "", fmt.Errorf("create cgroup %s: %w", slice, err)
	}
	if err := enableControllers(root); err != nil {
		return "", err
	}
	if err := enableControllers(slice); err != nil {
		return "", err
	}
	path := filepath.Join(slice, cfg.Name)
	if err := os.Mkdir(path, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
		return "", fmt.Errorf("create cgroup %s: %w", path, err)
	}
	offered := readControllers(filepath.Join(slice, "cgroup.subtree_control"))
	if offered["cpu"] {
		quota := fmt.Sprintf("%d %d", cfg.CPUs*cgroupCPUPeriodUS, cgroupCPUPeriodUS)
		if err := writeCgroupFile(path, "cpu.max", quota); err != nil {
			return path, err
		}
	}
	if offered["memory"] {
		limit := (cfg.MemoryMiB + cgroupMemoryOverheadMiB) << 20
		if err := writeCgroupFile(path, "memory.max", strconv.FormatInt(limit, 10)); err != nil {
			return path, err
		}
	}
	if err := writeCgroupFile(path, "cgroup.procs", strconv.Itoa(pid)); err != nil {
		return path, err
	}
	return path, nil
}

// enableControllers turns on, for dir's children, the wanted controllers dir has and has not
// enabled yet.
func enableControllers(dir string) error {
	available := readControllers(filepath.Join(dir, "cgroup.controllers"))
	enabled := readControllers(filepath.Join(dir, "cgroup.subtree_control"))
	var add []string
	for _, c := range cgroupControllers {
		if available[c] && !enabled[c] {
			add = append(add, "+"+c)
		}
	}
	if len(add) == 0 {
		return nil
	}
	return writeCgroupFile(dir, "cgroup.subtree_control", strings.Join(add, " "))
}

// readControllers parses a space-separated controller list; a missing file is an empty list.
func readControllers(path string) map[string]bool {
	set := map[string]bool{}
	b, err := os.ReadFile(path)
	if err != nil {
		return set
	}
	for _, c := range strings.Fields(string(b)) {
		set[strings.TrimPrefix(c, "+")] = true
	}
	return set
}

func writeCgroupFile(dir, name, value string) error {
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, []byte(value), 0o644); err != nil {
		return fmt.Errorf("write %q to %s: %w", value, path, err)
	}
	return nil
}

// removeCgroup removes a VM's cgroup once its process has left it.
func removeCgroup(path string) error {
	deadline := time.Now().Add(cgroupRemoveTimeout)
	for {
		err := os.Remove(path)
		if err == nil || errors.Is(err, os.ErrNotExist) {
			return nil
		}
		if !errors.Is(err, syscall.EBUSY) || time.Now().After(deadline) {
			return fmt.Errorf("remove cgroup %s: %w", path, err)
		}
		time.Sleep(cgroupRemoveRetry)
	}
}

// cgroupOf returns the kumo.slice cgroup directory of pid, "" if it is in none.
func cgroupOf(pid int) string {
	f, err := os.Open(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		return ""
	}
	defer f.Close()
	return cgroupFromProcFile(cgroupRoot, bufio.NewScanner(f))
}

// cgroupFromProcFile finds the cgroup v2 line ("0::/path") of a /proc/PID/cgroup file.
func cgroupFromProcFile(root string, sc *bufio.Scanner) string {
	for sc.Scan() {
		rel, ok := strings.CutPrefix(sc.Text(), "0::")
		if ok && strings.HasPrefix(rel, "/"+cgroupSlice+"/") {
			return filepath.Join(root, rel)
		}
	}
	return ""
}
