package qemu

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// requireQEMU skips in -short mode; otherwise a missing QEMU is a failure, not a skip.
func requireQEMU(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("starts QEMU; skipped in -short mode")
	}
	if _, err := exec.LookPath(DefaultBinary); err != nil {
		t.Fatalf("%s not installed (apt-get install qemu-system-x86), or run with -short: %v", DefaultBinary, err)
	}
}

func TestProbeBootSectorLayout(t *testing.T) {
	s, err := probeBootSector()
	if err != nil {
		t.Fatal(err)
	}
	if len(s) != 512 || s[510] != 0x55 || s[511] != 0xaa {
		t.Fatalf("not a boot sector: len %d, signature %#x %#x", len(s), s[510], s[511])
	}
	// cli; mov al,'R'; out 0xe9,al
	if want := []byte{0xfa, 0xb0, 'R', 0xe6, 0xe9}; !bytes.Equal(s[:len(want)], want) {
		t.Fatalf("starts with % x, want % x", s[:len(want)], want)
	}
	// mov al,0x21; out 0xf4,al; hlt; jmp -3
	if exit := []byte{0xb0, 0x21, 0xe6, 0xf4, 0xf4, 0xeb, 0xfd}; !bytes.Contains(s, exit) {
		t.Fatalf("no debug-exit sequence % x", exit)
	}
}

func TestProbeGuestRunsUnderTCG(t *testing.T) {
	requireQEMU(t)
	ok, err := ProbeGuestRuns(context.Background(), "", AccelTCG, 30*time.Second)
	if err != nil || !ok {
		t.Fatalf("ProbeGuestRuns(tcg) = %v, %v; want true", ok, err)
	}
}

// TestProbeAcceleratorFallsBackToTCG: KVM on these machines opens but hangs guests, so detection
// must time out and choose TCG. KUMO_TEST_EXPECT_ACCEL=kvm runs it on a host with working KVM.
func TestProbeAcceleratorFallsBackToTCG(t *testing.T) {
	requireQEMU(t)
	want := os.Getenv("KUMO_TEST_EXPECT_ACCEL")
	if want == "" {
		want = AccelTCG
	}
	began := time.Now()
	got, err := ProbeAccelerator(context.Background(), "")
	if err != nil {
		t.Fatal(err)
	}
	if got != want {
		t.Fatalf("ProbeAccelerator = %q, want %q", got, want)
	}
	if d := time.Since(began); d > kvmProbeTimeout+5*time.Second {
		t.Fatalf("ProbeAccelerator took %s, timeout is %s", d, kvmProbeTimeout)
	}
	t.Logf("accelerator %s after %s", got, time.Since(began).Round(time.Millisecond))
	if left := probeProcesses(); len(left) != 0 {
		t.Fatalf("probe QEMU processes left running: %v", left)
	}
}

// probeProcesses lists live processes whose command line names a probe image.
func probeProcesses() []int {
	entries, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		info, err := readProc(pid)
		if err == nil && info.state != 'Z' && strings.Contains(strings.Join(info.cmdline, " "), "kumo-qemu-probe-") {
			pids = append(pids, pid)
		}
	}
	return pids
}

func TestProbeGuestRunsReportsMissingBinary(t *testing.T) {
	if _, err := ProbeGuestRuns(context.Background(), "/nonexistent/qemu-system-x86_64", AccelTCG, time.Second); err == nil {
		t.Fatal("want an error for a missing binary")
	}
	if _, err := ProbeAccelerator(context.Background(), "/nonexistent/qemu-system-x86_64"); err == nil && kvmUsable() == nil {
		t.Fatal("ProbeAccelerator hid a missing binary")
	}
}

func TestParseVersion(t *testing.T) {
	for out, want := range map[string]string{
		"QEMU emulator version 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)\nCopyright (c) 2003-2022\n": "7.2.22",
		"QEMU emulator version 8.0.0\n":      "8.0.0",
		"QEMU emulator version 9.1 (v9.1.0)": "9.1",
	} {
		got, err := parseVersion(out)
		if err != nil || got != want {
			t.Errorf("parseVersion(%q) = %q, %v; want %q", out, got, err, want)
		}
	}
	if _, err := parseVersion("bash: qemu: command not found"); err == nil {
		t.Error("parseVersion accepted garbage")
	}
}

func TestVersionOfInstalledQEMU(t *testing.T) {
	requireQEMU(t)
	v, err := Version(context.Background(), "")
	if err != nil {
		t.Fatal(err)
	}
	if v == "" || v[0] < '1' || v[0] > '9' {
		t.Fatalf("Version = %q", v)
	}
	t.Logf("QEMU %s", v)
}

func TestParseCPUModelsReadsTheX86Lines(t *testing.T) {
	out := "Available CPUs:\nx86 486                   (alias configured by machine type)\nx86 Skylake-Server-v4     Intel Xeon\nx86 host                  KVM processor with all supported host features\nx86 qemu64                QEMU Virtual CPU version 2.5+\n\nRecognized CPUID flags:\n  3dnow 3dnowext\n"
	got := parseCPUModels(out)
	want := []string{"486", "Skylake-Server-v4", "host", "qemu64"}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("models = %v, want %v", got, want)
	}
}

func TestCPUModelsOfTheInstalledQEMU(t *testing.T) {
	requireQEMU(t)
	models, err := CPUModels(context.Background(), "")
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range []string{"qemu64", "max", "host"} {
		if !slices.Contains(models, m) {
			t.Errorf("QEMU's models %v lack %s", models, m)
		}
	}
}
