package agent

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"kumo.dev/kumo/internal/hypervisor/qemu"
)

// vmStats is what one scrape learns about a running incarnation.
type vmStats struct {
	vcpus   []vcpuTime
	process qemu.ProcessUsage
	// memory is the guest's memory; balloon its size after ballooning (0: no balloon device).
	memory, balloon int64
	disks           []diskStats
	nics            []nicStats
}

type vcpuTime struct {
	index int
	time  time.Duration
}

// diskStats are a disk's counters under the name the VM knows it by (its VMDisk; "cidata" for
// the cloud-init seed).
type diskStats struct {
	drive string
	qemu.BlockStats
}

// nicStats are a NIC's counters as the guest sees them (received = what the host sent it).
type nicStats struct {
	name                                     string
	RxBytes, TxBytes, RxPackets, TxPackets   uint64
	RxErrors, TxErrors, RxDropped, TxDropped uint64
}

// readVMStats asks the incarnation's QEMU and the host about it, within ctx. Any failure fails
// the whole read: counters are reported from one consistent look or not at all.
func readVMStats(ctx context.Context, v *qemu.VM, cfg qemu.Config, nicStatsOf func(qemu.NIC) (nicStats, error)) (vmStats, error) {
	var s vmStats
	cpus, err := v.VCPUs(ctx)
	if err != nil {
		return s, err
	}
	for _, c := range cpus {
		t, err := v.ThreadCPUTime(c.ThreadID)
		if err != nil {
			return s, fmt.Errorf("vCPU %d: %w", c.Index, err)
		}
		s.vcpus = append(s.vcpus, vcpuTime{index: c.Index, time: t.Total()})
	}
	if s.process, err = v.Usage(); err != nil {
		return s, err
	}
	if s.memory, err = v.MemorySize(ctx); err != nil {
		return s, err
	}
	if s.balloon, err = v.BalloonSize(ctx); errors.Is(err, qemu.ErrNoBalloon) {
		s.balloon = 0
	} else if err != nil {
		return s, err
	}
	blocks, err := v.BlockStats(ctx)
	if err != nil {
		return s, err
	}
	s.disks = drivesOf(cfg, blocks)
	for _, n := range cfg.NICs {
		st, err := nicStatsOf(n)
		if err != nil {
			return s, fmt.Errorf("NIC %s: %w", n.ID, err)
		}
		s.nics = append(s.nics, st)
	}
	return s, nil
}

// drivesOf names each device's statistics after the volume the VM configured on it; devices
// that are not one of cfg's disks are left out.
func drivesOf(cfg qemu.Config, blocks []qemu.BlockStats) []diskStats {
	var out []diskStats
	for _, b := range blocks {
		id, ok := qemu.DiskIDOfNode(b.NodeName)
		if !ok {
			continue
		}
		for _, d := range cfg.Disks {
			if d.ID != id {
				continue
			}
			name := d.Name
			if name == "" {
				name = d.ID
			}
			out = append(out, diskStats{drive: name, BlockStats: b})
		}
	}
	return out
}

// sysClassNet is where the host lists its network interfaces; tests point it elsewhere.
var sysClassNet = "/sys/class/net"

// readNICStats reads the counters of a NIC's tap device. A tap's receive side is what the guest
// sent, so the directions are swapped to be the guest's.
func readNICStats(n qemu.NIC) (nicStats, error) {
	st := nicStats{name: n.ID}
	dir := filepath.Join(sysClassNet, n.Tap, "statistics")
	for file, dst := range map[string]*uint64{
		"tx_bytes": &st.RxBytes, "rx_bytes": &st.TxBytes, "tx_packets": &st.RxPackets, "rx_packets": &st.TxPackets,
		"tx_errors": &st.RxErrors, "rx_errors": &st.TxErrors, "tx_dropped": &st.RxDropped, "rx_dropped": &st.TxDropped,
	} {
		b, err := os.ReadFile(filepath.Join(dir, file))
		if err != nil {
			return st, fmt.Errorf("read counters of tap %s: %w", n.Tap, err)
		}
		if *dst, err = strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64); err != nil {
			return st, fmt.Errorf("tap %s %s: %w", n.Tap, file, err)
		}
	}
	return st, nil
}

// splitKey splits a namespace/name key.
func splitKey(key string) (ns, name string, ok bool) {
	return strings.Cut(key, "/")
}
