package qemu

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"syscall"
	"time"
)

// Timeouts of accelerator detection.
const (
	// kvmProbeTimeout bounds the KVM probe guest. It exits within milliseconds when KVM works; on
	// hosts where KVM is broken the guest hangs instead.
	kvmProbeTimeout = 5 * time.Second
	// probeWaitDelay bounds the wait for a killed probe QEMU's output to close.
	probeWaitDelay = 5 * time.Second
	// versionTimeout bounds `qemu-system-x86_64 --version`.
	versionTimeout = 10 * time.Second
)

const (
	kvmDevice = "/dev/kvm"
	// kvmGetAPIVersion is the KVM_GET_API_VERSION ioctl, _IO(0xAE, 0x00); kvmAPIVersion is the
	// only version Linux has ever returned.
	kvmGetAPIVersion = 0xae00
	kvmAPIVersion    = 12
	// probeStderrMax bounds the probe's captured stderr.
	probeStderrMax = 4096
)

// ProbeAccelerator returns "kvm" if /dev/kvm is usable and a probe guest really runs under KVM,
// else "tcg". An error means the probe itself could not be run (e.g. no QEMU binary).
func ProbeAccelerator(ctx context.Context, binary string) (string, error) {
	if binary == "" {
		binary = DefaultBinary
	}
	if err := kvmUsable(); err != nil {
		slog.Info("KVM not usable, using TCG", "reason", err)
		return AccelTCG, nil
	}
	ok, err := ProbeGuestRuns(ctx, binary, AccelKVM, kvmProbeTimeout)
	if err != nil {
		return "", fmt.Errorf("probe accelerator: %w", err)
	}
	if !ok {
		slog.Info("KVM probe guest did not run, using TCG")
		return AccelTCG, nil
	}
	return AccelKVM, nil
}

// kvmUsable opens /dev/kvm and checks its API version.
func kvmUsable() error {
	f, err := os.OpenFile(kvmDevice, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("open %s: %w", kvmDevice, err)
	}
	defer f.Close()
	v, _, errno := syscall.Syscall(syscall.SYS_IOCTL, f.Fd(), kvmGetAPIVersion, 0)
	if errno != 0 {
		return fmt.Errorf("KVM_GET_API_VERSION on %s: %w", kvmDevice, errno)
	}
	if v != kvmAPIVersion {
		return fmt.Errorf("%s has API version %d, want %d", kvmDevice, v, kvmAPIVersion)
	}
	return nil
}

// ProbeGuestRuns boots a one-sector guest under accel and reports whether it ran: it must enter
// long mode, finish a busy loop that real guests would need seconds for on a broken accelerator,
// report every stage on debugcon and end QEMU through isa-debug-exit, all within timeout. false with a nil error
// means the accelerator does not work (QEMU refused it, or the guest hung or misbehaved); an
// error means the probe could not be carried out.
func ProbeGuestRuns(ctx context.Context, binary, accel string, timeout time.Duration) (bool, error) {
	if binary == "" {
		binary = DefaultBinary
	}
	sector, err := probeBootSector()
	if err != nil {
		return false, err
	}
	dir, err := os.MkdirTemp("", "kumo-qemu-probe-")
	if err != nil {
		return false, fmt.Errorf("probe %s: %w", accel, err)
	}
	defer os.RemoveAll(dir)
	img, debugcon := filepath.Join(dir, "probe.img"), filepath.Join(dir, "debugcon.out")
	if err := os.WriteFile(img, sector, 0o600); err != nil {
		return false, fmt.Errorf("probe %s: write boot sector: %w", accel, err)
	}

	// A stalled guest is diagnosed by how far it got.
	stages := func() string { b, _ := os.ReadFile(debugcon); return string(b) }

	pctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(pctx, binary,
		"-machine", "pc", "-accel", accel,
		"-nodefaults", "-no-user-config", "-display", "none", "-m", "16",
		"-device", fmt.Sprintf("isa-debug-exit,iobase=%#x,iosize=0x04", debugExitPort),
		"-debugcon", "file:"+escapeOpt(debugcon),
		"-drive", "file="+escapeOpt(img)+",format=raw,if=ide")
	var stderr bytes.Buffer
	cmd.Stderr = &limitedWriter{w: &stderr, n: probeStderrMax}
	cmd.WaitDelay = probeWaitDelay
	began := time.Now()
	err = cmd.Run()
	log := slog.With("accel", accel, "elapsed", time.Since(began).Round(time.Millisecond))

	var exitErr *exec.ExitError
	switch {
	case ctx.Err() != nil:
		return false, fmt.Errorf("probe %s: %w", accel, ctx.Err())
	case pctx.Err() != nil:
		log.Info("probe guest did not finish", "timeout", timeout, "stages_done", stages(), "stages", probeStages)
		return false, nil
	case errors.As(err, &exitErr):
	case err != nil:
		return false, fmt.Errorf("probe %s: run %s: %w", accel, binary, err)
	}
	code := cmd.ProcessState.ExitCode()
	if done := stages(); code != probeExitCode || done != probeStages {
		log.Info("probe guest did not run", "exit_code", code, "stages_done", done, "stages", probeStages,
			"stderr", strings.TrimSpace(stderr.String()))
		return false, nil
	}
	log.Debug("probe guest ran")
	return true, nil
}

// limitedWriter keeps the first n bytes and discards the rest.
type limitedWriter struct {
	w *bytes.Buffer
	n int
}

func (l *limitedWriter) Write(p []byte) (int, error) {
	if room := l.n - l.w.Len(); room > 0 {
		l.w.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}

var versionPattern = regexp.MustCompile(`QEMU emulator version (\d+\.\d+(?:\.\d+)?)`)

// Version runs `BINARY --version` and returns QEMU's version, e.g. "7.2.22".
func Version(ctx context.Context, binary string) (string, error) {
	if binary == "" {
		binary = DefaultBinary
	}
	vctx, cancel := context.WithTimeout(ctx, versionTimeout)
	defer cancel()
	out, err := exec.CommandContext(vctx, binary, "--version").Output()
	if err != nil {
		return "", fmt.Errorf("run %s --version: %w", binary, err)
	}
	return parseVersion(string(out))
}

func parseVersion(out string) (string, error) {
	m := versionPattern.FindStringSubmatch(out)
	if m == nil {
		return "", fmt.Errorf("parse qemu version from %q", strings.TrimSpace(out))
	}
	return m[1], nil
}

// cpuModelsTimeout bounds `qemu -cpu help`.
const cpuModelsTimeout = 10 * time.Second

// CPUModels lists the CPU models the QEMU binary offers a guest (`-cpu help`), e.g. qemu64, max,
// host, Skylake-Server-v4; VMs may name one as spec.cpuModel.
func CPUModels(ctx context.Context, binary string) ([]string, error) {
	if binary == "" {
		binary = DefaultBinary
	}
	cctx, cancel := context.WithTimeout(ctx, cpuModelsTimeout)
	defer cancel()
	out, err := exec.CommandContext(cctx, binary, "-machine", "none", "-cpu", "help").Output()
	if err != nil {
		return nil, fmt.Errorf("run %s -cpu help: %w", binary, err)
	}
	models := parseCPUModels(string(out))
	if len(models) == 0 {
		return nil, fmt.Errorf("%s -cpu help lists no CPU models", binary)
	}
	return models, nil
}

// parseCPUModels reads the "x86 NAME  (description)" lines of `-cpu help`, sorted.
func parseCPUModels(out string) []string {
	seen := map[string]bool{}
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) >= 2 && f[0] == "x86" && cpuModelPattern.MatchString(f[1]) {
			seen[f[1]] = true
		}
	}
	models := make([]string, 0, len(seen))
	for m := range seen {
		models = append(models, m)
	}
	sort.Strings(models)
	return models
}
