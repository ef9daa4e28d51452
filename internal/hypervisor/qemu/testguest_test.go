package qemu

import (
	"bytes"
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// Test guests: boot sectors on raw disk images, so tests need no downloaded image.

const (
	bootMarker = "KUMO-BOOT-OK"
	// testStartTimeout bounds Start in tests; Start has its own startTimeout inside.
	testStartTimeout = 60 * time.Second
	// serialTimeout bounds waiting for the marker guest's output (it prints once a second).
	serialTimeout = 15 * time.Second
	// pvpanicPort is the pvpanic ISA device's default I/O port.
	pvpanicPort = 0x505
	// q35PM1Control is ICH9's ACPI PM1a control register as SeaBIOS places it (PM base 0x600).
	q35PM1Control = 0x604
)

// serialMessageBootSector prints msg on COM1 about once a second, forever, halting in between (the
// BIOS timer interrupt, 18.2 Hz, wakes it). It ignores ACPI, so it never powers off by itself.
func serialMessageBootSector(msg string) ([]byte, error) {
	a := newAsm16()
	a.cli()
	a.xorAXAX()
	a.movDSAX()
	a.sti()
	a.label("print")
	a.movSILabel("msg")
	a.movDXImm(serialCOM1DataReg)
	a.label("next")
	a.lodsb()
	a.testALAL()
	a.jz("wait")
	a.outDXAL()
	a.jmp("next")
	a.label("wait")
	a.movCXImm(18)
	a.label("tick")
	a.hlt()
	a.loop("tick")
	a.jmp("print")
	a.label("msg")
	a.data([]byte(msg)...)
	a.data(0)
	return a.sector()
}

// powerOffBootSector waits about half a second, then powers the machine off through ACPI S5 the way
// an OS would (SLP_EN with SLP_TYP 0 in PM1a_CNT of a q35 machine).
func powerOffBootSector() ([]byte, error) {
	a := newAsm16()
	a.cli()
	a.xorAXAX()
	a.movDSAX()
	a.sti()
	a.movCXImm(9)
	a.label("tick")
	a.hlt()
	a.loop("tick")
	a.movDXImm(q35PM1Control)
	a.emit(0xb8, 0x00, 0x20) // mov ax, SLP_EN
	a.emit(0xef)             // out dx, ax
	a.label("halt")
	a.hlt()
	a.jmp("halt")
	return a.sector()
}

// panicBootSector reports a guest panic through pvpanic at once.
func panicBootSector() ([]byte, error) {
	a := newAsm16()
	a.cli()
	a.movDXImm(pvpanicPort)
	a.movALImm(1) // PVPANIC_PANICKED
	a.outDXAL()
	a.label("halt")
	a.hlt()
	a.jmp("halt")
	return a.sector()
}

// shortTempDir is a temporary directory with a short path: unix socket paths are limited to 107
// bytes and t.TempDir paths carry the test name.
func shortTempDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "kq-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// writeDisk writes a 1 MiB raw disk image whose first sector is sector.
func writeDisk(t *testing.T, path string, sector []byte, err error) string {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
	img := make([]byte, 1<<20)
	copy(img, sector)
	if err := os.WriteFile(path, img, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func markerDisk(t *testing.T, dir string) string {
	t.Helper()
	s, err := serialMessageBootSector(bootMarker + "\r\n")
	return writeDisk(t, filepath.Join(dir, "marker.img"), s, err)
}

// tinyConfig is a small TCG VM booting disk over virtio.
func tinyConfig(name, runDir, disk string) Config {
	return Config{
		Name: name, UUID: testUUID, Accel: AccelTCG, Machine: "q35", CPUs: 1, MemoryMiB: 64,
		RunDir: runDir,
		Disks:  []Disk{{ID: "boot", Path: disk, Format: "raw", Bus: BusVirtio, BootIndex: 1}},
	}
}

// startTestVM starts cfg and makes sure QEMU is killed when the test ends.
func startTestVM(t *testing.T, cfg Config) (*VM, time.Duration) {
	t.Helper()
	killQEMUOnCleanup(t, cfg.RunDir)
	ctx, cancel := context.WithTimeout(context.Background(), testStartTimeout)
	defer cancel()
	began := time.Now()
	v, err := Start(ctx, cfg)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	ready := time.Since(began)
	t.Cleanup(func() {
		v.Kill()
		select {
		case <-v.Exited():
		case <-time.After(killTimeout):
			t.Errorf("qemu pid %d still running after SIGKILL", v.PID())
		}
		v.Close()
	})
	return v, ready
}

// killQEMUOnCleanup kills any QEMU still serving runDir when the test ends, whoever started it.
func killQEMUOnCleanup(t *testing.T, runDir string) {
	t.Cleanup(func() {
		for _, pid := range qemuProcessesFor(runDir) {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	})
}

// qemuProcessesFor lists live QEMU processes serving runDir's QMP socket.
func qemuProcessesFor(runDir string) []int {
	entries, _ := os.ReadDir("/proc")
	qmp := (&Config{RunDir: runDir}).QMPSocket()
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		info, err := readProc(pid)
		if err == nil && info.state != 'Z' && isQEMUFor(info.cmdline, qmp) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// readSerialUntil connects to a serial socket and reads until want appears.
func readSerialUntil(t *testing.T, socket, want string) {
	t.Helper()
	conn, err := net.Dial("unix", socket)
	if err != nil {
		t.Fatalf("connect to serial console: %v", err)
	}
	defer conn.Close()
	conn.SetReadDeadline(time.Now().Add(serialTimeout))
	var got []byte
	buf := make([]byte, 4096)
	for !bytes.Contains(got, []byte(want)) {
		n, err := conn.Read(buf)
		got = append(got, buf[:n]...)
		if err != nil {
			t.Fatalf("serial console: read %q, no %q: %v", got, want, err)
		}
	}
}

// waitEvent waits for the named QMP event.
func waitEvent(t *testing.T, events <-chan Event, name string, timeout time.Duration) Event {
	t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case ev, ok := <-events:
			if !ok {
				t.Fatalf("event channel closed while waiting for %s", name)
			}
			if ev.Name == name {
				return ev
			}
		case <-deadline:
			t.Fatalf("no %s event within %s", name, timeout)
		}
	}
}

func requireQEMUImg(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("qemu-img"); err != nil {
		t.Fatalf("qemu-img not installed (apt-get install qemu-utils): %v", err)
	}
}
