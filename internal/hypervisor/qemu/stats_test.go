package qemu

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

func TestParseStatCPUReadsUtimeAndStimeAfterAnOddCommandName(t *testing.T) {
	// A real vCPU thread's line (fields 14 and 15: 4711 and 58), its name holding spaces and ')'.
	line := []byte("4242 (CPU 0/TCG) x) S 1 4240 4240 0 -1 4194368 1093 0 0 0 4711 58 0 0 20 0 5 0 123456 1234567 890 18446744073709551615 1 1 0 0 0 0 0 4096 0 0 0 0 -1 1 0 0 0 0 0\n")
	got, err := parseStatCPU(line)
	if err != nil {
		t.Fatal(err)
	}
	if got.User != 47110*time.Millisecond || got.System != 580*time.Millisecond || got.Total() != 47690*time.Millisecond {
		t.Fatalf("parseStatCPU = %+v", got)
	}
	for _, bad := range []string{"", "12 (x S 1", "12 (qemu) S 1 2 3", "12 (qemu) S 1 4240 4240 0 -1 4194368 1093 0 0 0 x 58 0"} {
		if _, err := parseStatCPU([]byte(bad)); err == nil {
			t.Errorf("parseStatCPU(%q) accepted a broken line", bad)
		}
	}
}

func TestParseStatmResidentIsTheSecondField(t *testing.T) {
	if n, err := parseStatmResident([]byte("301234 20480 1500 700 0 50000 0\n")); err != nil || n != 20480 {
		t.Fatalf("parseStatmResident = %d, %v", n, err)
	}
	if _, err := parseStatmResident([]byte("301234")); err == nil {
		t.Error("a one-field statm was accepted")
	}
}

func TestBlockStatsMapsDevicesToDiskIDsAndSkipsBackendsWithoutDevice(t *testing.T) {
	// As QEMU 7.2 answers query-blockstats for -blockdev disks: no "device", the qdev path and
	// the root node name; the pflash backends of UEFI have neither qdev nor device.
	raw := `[
	 {"device": "", "qdev": "/machine/peripheral/disk-disk0/virtio-backend", "node-name": "drive-disk0",
	  "stats": {"rd_bytes": 5120, "wr_bytes": 1048576, "rd_operations": 10, "wr_operations": 256, "flush_operations": 3,
	            "rd_total_time_ns": 2000000, "wr_total_time_ns": 5000000000, "flush_total_time_ns": 7}},
	 {"device": "", "qdev": "", "node-name": "pflash-vars", "stats": {"rd_bytes": 1}},
	 {"device": "", "qdev": "disk-cidata", "node-name": "drive-cidata", "stats": {"rd_bytes": 2048, "rd_operations": 1}}
	]`
	var reply []blockStatsReply
	if err := json.Unmarshal([]byte(raw), &reply); err != nil {
		t.Fatal(err)
	}
	got := blockStatsFrom(reply)
	if len(got) != 2 {
		t.Fatalf("stats of %d devices, want 2: %+v", len(got), got)
	}
	want := BlockStats{NodeName: "drive-disk0", Device: "/machine/peripheral/disk-disk0/virtio-backend", ReadBytes: 5120, WriteBytes: 1 << 20,
		ReadOps: 10, WriteOps: 256, FlushOps: 3, ReadTime: 2 * time.Millisecond, WriteTime: 5 * time.Second, FlushTime: 7}
	if got[0] != want {
		t.Errorf("disk0: %+v, want %+v", got[0], want)
	}
	for node, want := range map[string]string{"drive-disk0": "disk0", "drive-cidata": "cidata"} {
		if id, ok := DiskIDOfNode(node); !ok || id != want {
			t.Errorf("DiskIDOfNode(%q) = %q, %v", node, id, ok)
		}
	}
	if _, ok := DiskIDOfNode("file-disk0"); ok {
		t.Error("a protocol node was taken for a disk's device node")
	}
}

// TestStatsOfARunningGuest reads every statistic from a real QEMU: the vCPU threads exist and
// have run, the boot disk was read by the firmware, memory is what was configured, and a VM
// without a balloon says so.
func TestStatsOfARunningGuest(t *testing.T) {
	requireQEMU(t)
	dir := shortTempDir(t)
	cfg := tinyConfig("tenant-a_stats", filepath.Join(dir, "run"), markerDisk(t, dir))
	cfg.CPUs = 2
	v, _ := startTestVM(t, cfg)
	readSerialUntil(t, cfg.SerialSocket(), bootMarker)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	cpus, err := v.VCPUs(ctx)
	if err != nil || len(cpus) != 2 {
		t.Fatalf("VCPUs = %+v, %v; want 2", cpus, err)
	}
	var vcpuTime time.Duration
	for _, c := range cpus {
		if _, err := os.Stat(filepath.Join("/proc", strconv.Itoa(v.PID()), "task", strconv.Itoa(c.ThreadID))); err != nil {
			t.Fatalf("vCPU %d: thread %d is not a thread of QEMU: %v", c.Index, c.ThreadID, err)
		}
		ct, err := v.ThreadCPUTime(c.ThreadID)
		if err != nil {
			t.Fatal(err)
		}
		vcpuTime += ct.Total()
	}
	if vcpuTime <= 0 {
		t.Errorf("the vCPU threads of a guest that booted have used no CPU time")
	}
	usage, err := v.Usage()
	if err != nil || usage.CPU.Total() < vcpuTime || usage.ResidentBytes < 1<<20 {
		t.Errorf("Usage = %+v, %v; want at least the vCPUs' %s and 1 MiB resident", usage, err, vcpuTime)
	}

	stats, err := v.BlockStats(ctx)
	if err != nil || len(stats) != 1 {
		t.Fatalf("BlockStats = %+v, %v; want the boot disk alone", stats, err)
	}
	if id, ok := DiskIDOfNode(stats[0].NodeName); !ok || id != "boot" || stats[0].ReadBytes < 512 || stats[0].ReadOps == 0 {
		t.Errorf("boot disk stats %+v: want node drive-boot, the boot sector read", stats[0])
	}
	if mem, err := v.MemorySize(ctx); err != nil || mem != 64<<20 {
		t.Errorf("MemorySize = %d, %v; want 64 MiB", mem, err)
	}
	if _, err := v.BalloonSize(ctx); !errors.Is(err, ErrNoBalloon) {
		t.Errorf("BalloonSize of a VM without balloon: %v, want ErrNoBalloon", err)
	}
}
