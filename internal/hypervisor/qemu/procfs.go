package qemu

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// procInfo is what Attach and the exit watcher need to know about a process.
type procInfo struct {
	state     byte   // R, S, D, Z, ...
	startTime uint64 // clock ticks after boot; tells a reused PID apart
	cmdline   []string
}

// errNoProcess means the PID does not exist.
var errNoProcess = errors.New("no such process")

// readProc reads /proc/PID/stat and /proc/PID/cmdline.
func readProc(pid int) (procInfo, error) {
	var info procInfo
	dir := filepath.Join("/proc", strconv.Itoa(pid))
	stat, err := os.ReadFile(filepath.Join(dir, "stat"))
	if errors.Is(err, os.ErrNotExist) {
		return info, errNoProcess
	}
	if err != nil {
		return info, fmt.Errorf("read /proc/%d/stat: %w", pid, err)
	}
	info.state, info.startTime, err = parseStat(stat)
	if err != nil {
		return info, fmt.Errorf("parse /proc/%d/stat: %w", pid, err)
	}
	cmdline, err := os.ReadFile(filepath.Join(dir, "cmdline"))
	if errors.Is(err, os.ErrNotExist) {
		return info, errNoProcess
	}
	if err != nil {
		return info, fmt.Errorf("read /proc/%d/cmdline: %w", pid, err)
	}
	for _, arg := range bytes.Split(bytes.TrimSuffix(cmdline, []byte{0}), []byte{0}) {
		info.cmdline = append(info.cmdline, string(arg))
	}
	return info, nil
}

// parseStat extracts the state (field 3) and start time (field 22) from /proc/PID/stat. The command
// name (field 2) is in parentheses and may itself contain spaces and parentheses.
func parseStat(stat []byte) (state byte, startTime uint64, err error) {
	end := bytes.LastIndexByte(stat, ')')
	if end < 0 {
		return 0, 0, errors.New("no command name")
	}
	fields := strings.Fields(string(stat[end+1:]))
	// fields[0] is field 3 (state); field 22 (starttime) is fields[19].
	if len(fields) < 20 || len(fields[0]) != 1 {
		return 0, 0, fmt.Errorf("only %d fields", len(fields)+2)
	}
	startTime, err = strconv.ParseUint(fields[19], 10, 64)
	if err != nil {
		return 0, 0, fmt.Errorf("start time: %w", err)
	}
	return fields[0][0], startTime, nil
}

// processGone reports whether the process has exited: no longer in /proc, a zombie, or the PID now
// belongs to a process started at another time.
func processGone(pid int, startTime uint64) bool {
	info, err := readProc(pid)
	if err != nil {
		return errors.Is(err, errNoProcess)
	}
	return info.state == 'Z' || info.state == 'X' || info.startTime != startTime
}

// isQEMUFor reports whether cmdline is a QEMU system emulator serving the QMP socket.
func isQEMUFor(cmdline []string, qmpSocket string) bool {
	if len(cmdline) == 0 || !strings.HasPrefix(filepath.Base(cmdline[0]), "qemu-system-") {
		return false
	}
	want := qmpArg(qmpSocket)
	for i := 1; i+1 < len(cmdline); i++ {
		if cmdline[i] == "-qmp" && cmdline[i+1] == want {
			return true
		}
	}
	return false
}

// guestName extracts the guest name from QEMU's "-name guest=NAME,..." argument.
func guestName(cmdline []string) string {
	for i := 1; i+1 < len(cmdline); i++ {
		if cmdline[i] != "-name" {
			continue
		}
		for _, opt := range strings.Split(cmdline[i+1], ",") {
			if name, ok := strings.CutPrefix(opt, "guest="); ok {
				return name
			}
		}
	}
	return ""
}

// readPIDFile reads a pid file written by QEMU's -pidfile.
func readPIDFile(path string) (int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return 0, fmt.Errorf("pid file %s holds %q, not a pid", path, strings.TrimSpace(string(b)))
	}
	return pid, nil
}
