package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// The poller scans /proc every procInterval while someone waits for a QEMU to start, and every
// procIdleInterval otherwise, so that it does not take CPU from the guests it measures.
const (
	procInterval     = 5 * time.Millisecond
	procIdleInterval = 100 * time.Millisecond
)

// qemuProc is a QEMU process seen in /proc.
type qemuProc struct {
	pid       int
	argv      []string
	cmdline   string // argv joined with spaces, for matching
	firstSeen time.Time
}

// procPoller scans /proc every procInterval and remembers when each QEMU process whose command
// line mentions dir was first seen (after its exec: before that it still shows the parent's
// command line). It measures what really runs, whoever started it.
type procPoller struct {
	dir    string
	mu     sync.Mutex
	live   map[int]*qemuProc
	change chan struct{} // closed and replaced whenever live changes
	eager  atomic.Int32  // callers of waitStarted
	wake   chan struct{}
}

func newProcPoller(ctx context.Context, dir string) *procPoller {
	p := &procPoller{dir: dir, live: map[int]*qemuProc{}, change: make(chan struct{}), wake: make(chan struct{}, 1)}
	go func() {
		for {
			p.scan()
			interval := procIdleInterval
			if p.eager.Load() > 0 {
				interval = procInterval
			}
			select {
			case <-ctx.Done():
				return
			case <-p.wake:
			case <-time.After(interval):
			}
		}
	}()
	return p
}

// scan reads /proc once; processes already known are not read again.
func (p *procPoller) scan() {
	pids := listPIDs()
	now := time.Now()
	p.mu.Lock()
	known := p.live
	p.mu.Unlock()
	next := make(map[int]*qemuProc, len(known))
	changed := false
	for _, pid := range pids {
		if q, ok := known[pid]; ok {
			next[pid] = q
			continue
		}
		if argv, ok := qemuArgv(pid, p.dir); ok {
			next[pid] = &qemuProc{pid: pid, argv: argv, cmdline: strings.Join(argv, " "), firstSeen: now}
			changed = true
		}
	}
	if len(next) != len(known) {
		changed = true
	}
	if !changed {
		return
	}
	p.mu.Lock()
	p.live = next
	close(p.change)
	p.change = make(chan struct{})
	p.mu.Unlock()
}

// find returns the live QEMU whose command line contains substr, and a channel closed at the
// next change.
func (p *procPoller) find(substr string) (*qemuProc, <-chan struct{}) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, q := range p.live {
		if strings.Contains(q.cmdline, substr) {
			return q, p.change
		}
	}
	return nil, p.change
}

// waitStarted waits for a QEMU whose command line contains substr.
func (p *procPoller) waitStarted(ctx context.Context, substr string) (*qemuProc, error) {
	p.eager.Add(1)
	defer p.eager.Add(-1)
	select {
	case p.wake <- struct{}{}:
	default:
	}
	for {
		q, ch := p.find(substr)
		if q != nil {
			return q, nil
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-ch:
		}
	}
}

// waitGone waits until no QEMU's command line contains substr.
func (p *procPoller) waitGone(ctx context.Context, substr string) error {
	for {
		q, ch := p.find(substr)
		if q == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-ch:
		}
	}
}

func listPIDs() []int {
	d, err := os.Open("/proc")
	if err != nil {
		return nil
	}
	names, _ := d.Readdirnames(-1)
	d.Close()
	pids := make([]int, 0, len(names))
	for _, n := range names {
		if pid, err := strconv.Atoi(n); err == nil {
			pids = append(pids, pid)
		}
	}
	return pids
}

// qemuArgv returns the argv of pid if it is a qemu-system process whose command line mentions dir.
func qemuArgv(pid int, dir string) ([]string, bool) {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	if err != nil || len(data) == 0 || !bytes.Contains(data, []byte(dir)) {
		return nil, false
	}
	argv := strings.Split(strings.TrimRight(string(data), "\x00"), "\x00")
	if !strings.HasPrefix(filepath.Base(argv[0]), "qemu-system") {
		return nil, false
	}
	return argv, true
}

// killQEMUsUnder SIGKILLs every QEMU whose command line mentions dir and waits (up to 10s) for
// them to be gone. It returns how many it killed.
func killQEMUsUnder(dir string) int {
	killed := 0
	deadline := time.Now().Add(10 * time.Second)
	for {
		n := 0
		for _, pid := range listPIDs() {
			if _, ok := qemuArgv(pid, dir); ok {
				_ = syscall.Kill(pid, syscall.SIGKILL)
				n++
			}
		}
		if killed == 0 {
			killed = n
		}
		if n == 0 || time.Now().After(deadline) {
			return killed
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// clockTicks is USER_HZ, the unit of CPU times in /proc/PID/stat (100 on Linux everywhere).
const clockTicks = 100

// cpuTime is the user plus system CPU time pid used so far (without its children).
func cpuTime(pid int) time.Duration {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	// Fields after the command name (which may contain spaces) start at field 3 (state).
	i := bytes.LastIndexByte(data, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(data[i+1:]))
	if len(f) < 13 {
		return 0
	}
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(utime+stime) * time.Second / clockTicks
}

// cpuMeter measures the share of a core processes used over an interval.
type cpuMeter struct {
	pids  []int
	start time.Time
	cpu   []time.Duration
}

func startCPU(pids ...int) *cpuMeter {
	m := &cpuMeter{pids: pids, start: time.Now()}
	for _, pid := range pids {
		m.cpu = append(m.cpu, cpuTime(pid))
	}
	return m
}

// shares returns each process's CPU use since start as a fraction of one core.
func (m *cpuMeter) shares() []float64 {
	wall := time.Since(m.start)
	out := make([]float64, len(m.pids))
	for i, pid := range m.pids {
		out[i] = ratio(cpuTime(pid)-m.cpu[i], wall)
	}
	return out
}
