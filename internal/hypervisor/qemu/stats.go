package qemu

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// userHZ is the unit of the time fields of /proc/PID/stat (USER_HZ). Linux fixes it at 100 on
// every architecture Kumo runs on (sysconf(_SC_CLK_TCK)); Go has no portable call for it.
const userHZ = 100

// VCPU is one virtual CPU of a running VM and the host thread that runs it.
type VCPU struct {
	Index    int // cpu-index, 0-based
	ThreadID int // host thread id (TID) of the vCPU thread
}

// VCPUs lists the VM's vCPUs and their host threads (QMP query-cpus-fast, which never interrupts
// the guest).
func (v *VM) VCPUs(ctx context.Context) ([]VCPU, error) {
	var cpus []struct {
		CPUIndex int `json:"cpu-index"`
		ThreadID int `json:"thread-id"`
	}
	if err := v.mon.Execute(ctx, "query-cpus-fast", nil, &cpus); err != nil {
		return nil, fmt.Errorf("list vCPUs of VM %s: %w", v.paths.Name, err)
	}
	out := make([]VCPU, 0, len(cpus))
	for _, c := range cpus {
		out = append(out, VCPU{Index: c.CPUIndex, ThreadID: c.ThreadID})
	}
	return out, nil
}

// BlockStats are the I/O counters of one of a VM's disks since QEMU started.
type BlockStats struct {
	// NodeName is the block node the guest's device reads through (DiskNode of the disk's ID);
	// Device is the qdev path of that device.
	NodeName, Device               string
	ReadBytes, WriteBytes          uint64
	ReadOps, WriteOps, FlushOps    uint64
	ReadTime, WriteTime, FlushTime time.Duration
}

// blockStatsReply is one entry of QMP query-blockstats.
type blockStatsReply struct {
	Device   string `json:"device"`
	QDev     string `json:"qdev"`
	NodeName string `json:"node-name"`
	Stats    struct {
		ReadBytes   uint64 `json:"rd_bytes"`
		WriteBytes  uint64 `json:"wr_bytes"`
		ReadOps     uint64 `json:"rd_operations"`
		WriteOps    uint64 `json:"wr_operations"`
		FlushOps    uint64 `json:"flush_operations"`
		ReadTimeNS  uint64 `json:"rd_total_time_ns"`
		WriteTimeNS uint64 `json:"wr_total_time_ns"`
		FlushTimeNS uint64 `json:"flush_total_time_ns"`
	} `json:"stats"`
}

// BlockStats returns the I/O counters of every disk attached to a guest device (QMP
// query-blockstats); backends without a device (none in Kumo's configuration) are left out.
func (v *VM) BlockStats(ctx context.Context) ([]BlockStats, error) {
	var reply []blockStatsReply
	if err := v.mon.Execute(ctx, "query-blockstats", nil, &reply); err != nil {
		return nil, fmt.Errorf("read disk statistics of VM %s: %w", v.paths.Name, err)
	}
	return blockStatsFrom(reply), nil
}

func blockStatsFrom(reply []blockStatsReply) []BlockStats {
	out := make([]BlockStats, 0, len(reply))
	for _, r := range reply {
		if r.QDev == "" && r.Device == "" {
			continue
		}
		s := r.Stats
		out = append(out, BlockStats{
			NodeName: r.NodeName, Device: r.QDev,
			ReadBytes: s.ReadBytes, WriteBytes: s.WriteBytes,
			ReadOps: s.ReadOps, WriteOps: s.WriteOps, FlushOps: s.FlushOps,
			ReadTime: time.Duration(s.ReadTimeNS), WriteTime: time.Duration(s.WriteTimeNS), FlushTime: time.Duration(s.FlushTimeNS),
		})
	}
	return out
}

// DiskIDOfNode returns the Disk.ID whose block node is node (see DiskNode), or false.
func DiskIDOfNode(node string) (string, bool) {
	id, ok := strings.CutPrefix(node, "drive-")
	return id, ok && id != ""
}

// MemorySize returns the guest's memory as configured plus hot-plugged memory, in bytes (QMP
// query-memory-size-summary).
func (v *VM) MemorySize(ctx context.Context) (int64, error) {
	var sum struct {
		Base    int64 `json:"base-memory"`
		Plugged int64 `json:"plugged-memory"`
	}
	if err := v.mon.Execute(ctx, "query-memory-size-summary", nil, &sum); err != nil {
		return 0, fmt.Errorf("read memory size of VM %s: %w", v.paths.Name, err)
	}
	return sum.Base + sum.Plugged, nil
}

// ErrNoBalloon means the VM has no balloon device.
var ErrNoBalloon = errors.New("the VM has no balloon device")

// BalloonSize returns the memory the guest has after ballooning (QMP query-balloon "actual"), or
// ErrNoBalloon when the VM has no balloon device.
func (v *VM) BalloonSize(ctx context.Context) (int64, error) {
	var b struct {
		Actual int64 `json:"actual"`
	}
	err := v.mon.Execute(ctx, "query-balloon", nil, &b)
	var qe *QMPError
	if errors.As(err, &qe) && qe.Class == "DeviceNotActive" {
		return 0, ErrNoBalloon
	}
	if err != nil {
		return 0, fmt.Errorf("read balloon of VM %s: %w", v.paths.Name, err)
	}
	return b.Actual, nil
}

// CPUTime is CPU time spent in user and kernel (system) mode.
type CPUTime struct {
	User, System time.Duration
}

// Total is user plus system time.
func (c CPUTime) Total() time.Duration { return c.User + c.System }

// ProcessUsage is what /proc says about a QEMU process as a whole.
type ProcessUsage struct {
	CPU CPUTime
	// ResidentBytes is the process's resident set size.
	ResidentBytes int64
}

// Usage reads the QEMU process's CPU time (all threads: vCPUs, I/O, emulation) and resident
// memory from /proc.
func (v *VM) Usage() (ProcessUsage, error) {
	dir := filepath.Join("/proc", strconv.Itoa(v.pid))
	stat, err := os.ReadFile(filepath.Join(dir, "stat"))
	if err != nil {
		return ProcessUsage{}, fmt.Errorf("read CPU time of QEMU pid %d: %w", v.pid, err)
	}
	cpu, err := parseStatCPU(stat)
	if err != nil {
		return ProcessUsage{}, fmt.Errorf("parse /proc/%d/stat: %w", v.pid, err)
	}
	statm, err := os.ReadFile(filepath.Join(dir, "statm"))
	if err != nil {
		return ProcessUsage{}, fmt.Errorf("read memory of QEMU pid %d: %w", v.pid, err)
	}
	pages, err := parseStatmResident(statm)
	if err != nil {
		return ProcessUsage{}, fmt.Errorf("parse /proc/%d/statm: %w", v.pid, err)
	}
	return ProcessUsage{CPU: cpu, ResidentBytes: pages * int64(os.Getpagesize())}, nil
}

// ThreadCPUTime reads the CPU time of one thread of the QEMU process (a vCPU thread from VCPUs)
// from /proc/PID/task/TID/stat.
func (v *VM) ThreadCPUTime(tid int) (CPUTime, error) {
	path := filepath.Join("/proc", strconv.Itoa(v.pid), "task", strconv.Itoa(tid), "stat")
	stat, err := os.ReadFile(path)
	if err != nil {
		return CPUTime{}, fmt.Errorf("read CPU time of thread %d of QEMU pid %d: %w", tid, v.pid, err)
	}
	cpu, err := parseStatCPU(stat)
	if err != nil {
		return CPUTime{}, fmt.Errorf("parse %s: %w", path, err)
	}
	return cpu, nil
}

// parseStatCPU extracts utime (field 14) and stime (field 15), in USER_HZ ticks, from a
// /proc/PID/stat or /proc/PID/task/TID/stat line. The command name (field 2) is in parentheses
// and may itself hold spaces and parentheses.
func parseStatCPU(stat []byte) (CPUTime, error) {
	end := bytes.LastIndexByte(stat, ')')
	if end < 0 {
		return CPUTime{}, errors.New("no command name")
	}
	fields := strings.Fields(string(stat[end+1:]))
	// fields[0] is field 3 (state): utime (14) is fields[11], stime (15) fields[12].
	if len(fields) < 13 {
		return CPUTime{}, fmt.Errorf("only %d fields", len(fields)+2)
	}
	utime, err := strconv.ParseUint(fields[11], 10, 64)
	if err != nil {
		return CPUTime{}, fmt.Errorf("utime: %w", err)
	}
	stime, err := strconv.ParseUint(fields[12], 10, 64)
	if err != nil {
		return CPUTime{}, fmt.Errorf("stime: %w", err)
	}
	return CPUTime{User: ticks(utime), System: ticks(stime)}, nil
}

func ticks(n uint64) time.Duration { return time.Duration(n) * time.Second / userHZ }

// parseStatmResident returns the resident set size, in pages, from /proc/PID/statm (field 2).
func parseStatmResident(statm []byte) (int64, error) {
	fields := strings.Fields(string(statm))
	if len(fields) < 2 {
		return 0, fmt.Errorf("only %d fields", len(fields))
	}
	n, err := strconv.ParseInt(fields[1], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("resident: %w", err)
	}
	return n, nil
}
