package qemu

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestStartRunsGuestWithQMPSerialAndVNC(t *testing.T) {
	requireQEMU(t)
	dir := shortTempDir(t)
	runDir := filepath.Join(dir, "run")
	cfg := tinyConfig("tenant-a_vm1", runDir, markerDisk(t, dir))
	v, ready := startTestVM(t, cfg)
	t.Logf("Start to QMP ready under TCG: %s", ready)

	info, err := readProc(v.PID())
	if err != nil || info.state == 'Z' || !isQEMUFor(info.cmdline, cfg.QMPSocket()) {
		t.Fatalf("pid %d is not a live qemu for %s: %+v, %v", v.PID(), runDir, info, err)
	}
	if pid, err := readPIDFile(cfg.PIDFile()); err != nil || pid != v.PID() {
		t.Fatalf("pid file holds %d (%v), want %d", pid, err, v.PID())
	}
	ctx := context.Background()
	if st, err := v.Status(ctx); err != nil || st != StatusRunning {
		t.Fatalf("Status = %q, %v; want running", st, err)
	}
	readSerialUntil(t, cfg.SerialSocket(), bootMarker)

	conn, err := net.Dial("unix", cfg.VNCSocket())
	if err != nil {
		t.Fatalf("connect to VNC socket: %v", err)
	}
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	banner := make([]byte, 12)
	if _, err := conn.Read(banner); err != nil || string(banner) != "RFB 003.008\n" {
		t.Fatalf("VNC banner %q, %v", banner, err)
	}
	conn.Close()

	for path, want := range map[string]os.FileMode{
		runDir: 0o700 | os.ModeDir, cfg.QMPSocket(): 0o600 | os.ModeSocket, cfg.SerialSocket(): 0o600 | os.ModeSocket,
		cfg.VNCSocket(): 0o600 | os.ModeSocket, cfg.PIDFile(): 0o600, cfg.LogFile(): 0o600,
	} {
		if st, err := os.Stat(path); err != nil || st.Mode() != want {
			t.Errorf("%s: mode %v (%v), want %v", path, st.Mode(), err, want)
		}
	}
	if cgroupsUsable(cgroupRoot) != nil && v.CgroupPath() != "" {
		t.Errorf("CgroupPath = %q on a host without usable cgroup v2", v.CgroupPath())
	}
	if cgroupsUsable(cgroupRoot) == nil && v.CgroupPath() == "" {
		t.Errorf("cgroup v2 is usable here but QEMU was not placed in a cgroup")
	}
}

func TestEventsDeliverStopAndResume(t *testing.T) {
	requireQEMU(t)
	dir := shortTempDir(t)
	v, _ := startTestVM(t, tinyConfig("vm-events", filepath.Join(dir, "run"), markerDisk(t, dir)))
	ctx := context.Background()

	if err := v.mon.Execute(ctx, "stop", nil, nil); err != nil {
		t.Fatal(err)
	}
	waitEvent(t, v.Events(), "STOP", 5*time.Second)
	if st, err := v.Status(ctx); err != nil || st != StatusPaused {
		t.Fatalf("Status after stop = %q, %v; want paused", st, err)
	}
	if err := v.mon.Execute(ctx, "cont", nil, nil); err != nil {
		t.Fatal(err)
	}
	waitEvent(t, v.Events(), "RESUME", 5*time.Second)
	if st, err := v.Status(ctx); err != nil || st != StatusRunning {
		t.Fatalf("Status after cont = %q, %v; want running", st, err)
	}

	var qe *QMPError
	if err := v.mon.Execute(ctx, "no-such-command", nil, nil); !errors.As(err, &qe) || qe.Class != "CommandNotFound" {
		t.Fatalf("unknown command: %v, want *QMPError CommandNotFound", err)
	}
}

// TestGuestPowerOffLeavesQEMUInShutdownStatus: with -no-shutdown, a guest that powers off leaves
// QEMU alive in status "shutdown", which is how the agent tells a clean shutdown from a crash.
func TestGuestPowerOffLeavesQEMUInShutdownStatus(t *testing.T) {
	requireQEMU(t)
	dir := shortTempDir(t)
	s, err := powerOffBootSector()
	disk := writeDisk(t, filepath.Join(dir, "poweroff.img"), s, err)
	v, _ := startTestVM(t, tinyConfig("vm-poweroff", filepath.Join(dir, "run"), disk))

	ev := waitEvent(t, v.Events(), "SHUTDOWN", 30*time.Second)
	if ev.Data["guest"] != true {
		t.Errorf("SHUTDOWN event data %v, want guest=true", ev.Data)
	}
	ctx := context.Background()
	if st, err := v.Status(ctx); err != nil || st != StatusShutdown {
		t.Fatalf("Status = %q, %v; want shutdown", st, err)
	}
	select {
	case <-v.Exited():
		t.Fatal("qemu exited although -no-shutdown keeps it")
	default:
	}
	// Stop sees the guest is already down and does not wait out the grace period.
	began := time.Now()
	if err := v.Stop(ctx, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(began); d > 10*time.Second {
		t.Fatalf("Stop of a shut-down guest took %s", d)
	}
}

func TestGuestPanicShowsAsGuestPanickedStatus(t *testing.T) {
	requireQEMU(t)
	dir := shortTempDir(t)
	s, err := panicBootSector()
	disk := writeDisk(t, filepath.Join(dir, "panic.img"), s, err)
	v, _ := startTestVM(t, tinyConfig("vm-panic", filepath.Join(dir, "run"), disk))

	waitEvent(t, v.Events(), "GUEST_PANICKED", 30*time.Second)
	if st, err := v.Status(context.Background()); err != nil || st != StatusGuestPanicked {
		t.Fatalf("Status = %q, %v; want guest-panicked", st, err)
	}
}

func TestAttachFindsTheRunningQEMU(t *testing.T) {
	requireQEMU(t)
	dir := shortTempDir(t)
	runDir := filepath.Join(dir, "run")
	v, _ := startTestVM(t, tinyConfig("vm-attach", runDir, markerDisk(t, dir)))
	// The agent restarting: its QMP connection goes away, QEMU stays.
	if err := v.Close(); err != nil {
		t.Fatal(err)
	}

	ctx := context.Background()
	a, err := Attach(ctx, runDir)
	if err != nil {
		t.Fatalf("Attach: %v", err)
	}
	defer a.Close()
	if a.PID() != v.PID() {
		t.Fatalf("Attach found pid %d, started %d", a.PID(), v.PID())
	}
	if st, err := a.Status(ctx); err != nil || st != StatusRunning {
		t.Fatalf("Status via attached monitor = %q, %v", st, err)
	}
	if err := a.Kill(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-a.Exited():
	case <-time.After(killTimeout):
		t.Fatal("Exited of the attached VM not closed after kill")
	}
}

func TestAttachReturnsErrNotRunning(t *testing.T) {
	ctx := context.Background()
	write := func(t *testing.T, runDir, content string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(runDir, pidFileName), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	exited := exec.Command("true")
	if err := exited.Run(); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		pidFile string // "" = none
	}{
		{"no pid file", ""},
		{"pid of an exited process", strconv.Itoa(exited.Process.Pid)},
		{"pid reused by another program", strconv.Itoa(os.Getpid())},
		{"garbage pid file", "not-a-pid\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			runDir := shortTempDir(t)
			if tc.pidFile != "" {
				write(t, runDir, tc.pidFile)
			}
			if v, err := Attach(ctx, runDir); !errors.Is(err, ErrNotRunning) {
				if v != nil {
					v.Close()
				}
				t.Fatalf("Attach = %v, want ErrNotRunning", err)
			}
		})
	}
}

// TestStopFallsBackToQuitWhenGuestIgnoresACPI: the marker guest has no ACPI support, so Stop waits
// out the grace period, quits QEMU, and cleans up the run directory except the log.
func TestStopFallsBackToQuitWhenGuestIgnoresACPI(t *testing.T) {
	requireQEMU(t)
	dir := shortTempDir(t)
	cfg := tinyConfig("vm-stop", filepath.Join(dir, "run"), markerDisk(t, dir))
	v, _ := startTestVM(t, cfg)

	const grace = 2 * time.Second
	began := time.Now()
	if err := v.Stop(context.Background(), grace); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	took := time.Since(began)
	t.Logf("Stop took %s with grace %s", took, grace)
	if took < grace || took > grace+quitTimeout {
		t.Errorf("Stop took %s, want between %s and %s", took, grace, grace+quitTimeout)
	}
	select {
	case <-v.Exited():
	default:
		t.Fatal("Stop returned before the process was gone")
	}
	if pids := qemuProcessesFor(cfg.RunDir); len(pids) != 0 {
		t.Fatalf("qemu still running: %v", pids)
	}
	for _, f := range []string{cfg.QMPSocket(), cfg.SerialSocket(), cfg.VNCSocket(), cfg.PIDFile()} {
		if _, err := os.Stat(f); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s left behind (%v)", f, err)
		}
	}
	if _, err := os.Stat(cfg.LogFile()); err != nil {
		t.Errorf("log removed: %v", err)
	}
	if err := v.Stop(context.Background(), grace); err != nil {
		t.Errorf("second Stop: %v", err)
	}
}

func TestStartFailureReportsQEMUErrorAndLeavesNothingRunning(t *testing.T) {
	requireQEMU(t)
	dir := shortTempDir(t)
	missing := filepath.Join(dir, "no-such-disk.qcow2")
	cfg := tinyConfig("vm-broken", filepath.Join(dir, "run"), missing)
	killQEMUOnCleanup(t, cfg.RunDir)

	v, err := Start(context.Background(), cfg)
	if err == nil {
		v.Kill()
		t.Fatal("Start succeeded with a missing disk")
	}
	t.Logf("Start error: %v", err)
	for _, want := range []string{"qemu exited", "Could not open '" + missing + "'", "No such file or directory"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q: %v", want, err)
		}
	}
	if pids := qemuProcessesFor(cfg.RunDir); len(pids) != 0 {
		t.Fatalf("qemu left running: %v", pids)
	}
	for _, f := range []string{cfg.QMPSocket(), cfg.SerialSocket(), cfg.VNCSocket(), cfg.PIDFile()} {
		if _, err := os.Stat(f); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s left behind (%v)", f, err)
		}
	}
	log, err := os.ReadFile(cfg.LogFile())
	if err != nil || !strings.Contains(string(log), "Could not open") {
		t.Errorf("log lacks QEMU's error: %q, %v", log, err)
	}
}

func TestStartRefusesASecondQEMUForTheSameRunDir(t *testing.T) {
	requireQEMU(t)
	dir := shortTempDir(t)
	cfg := tinyConfig("vm-twice", filepath.Join(dir, "run"), markerDisk(t, dir))
	v, _ := startTestVM(t, cfg)
	if w, err := Start(context.Background(), cfg); err == nil || !strings.Contains(err.Error(), "already running") {
		if w != nil {
			w.Kill()
		}
		t.Fatalf("second Start = %v, want an already-running error", err)
	}
	if st, err := v.Status(context.Background()); err != nil || st != StatusRunning {
		t.Fatalf("first QEMU disturbed: %q, %v", st, err)
	}
}

// Environment of the helper process of TestStartSurvivesCallerDeath.
const (
	helperRunDirEnv = "KUMO_QEMU_TEST_HELPER_RUNDIR"
	helperDiskEnv   = "KUMO_QEMU_TEST_HELPER_DISK"
)

// TestHelperStartDetached is not a test: TestStartSurvivesCallerDeath runs the test binary with it
// as a stand-in agent that starts QEMU and is then killed.
func TestHelperStartDetached(t *testing.T) {
	runDir := os.Getenv(helperRunDirEnv)
	if runDir == "" {
		t.Skip("helper process of TestStartSurvivesCallerDeath")
	}
	v, err := Start(context.Background(), tinyConfig("vm-detached", runDir, os.Getenv(helperDiskEnv)))
	if err != nil {
		fmt.Printf("HELPER-ERROR %v\n", err)
		os.Exit(1)
	}
	fmt.Printf("HELPER-STARTED %d\n", v.PID())
	time.Sleep(time.Hour) // until killed
}

func TestStartSurvivesCallerDeath(t *testing.T) {
	requireQEMU(t)
	dir := shortTempDir(t)
	runDir := filepath.Join(dir, "run")
	killQEMUOnCleanup(t, runDir)

	helper := exec.Command(os.Args[0], "-test.run=^TestHelperStartDetached$", "-test.count=1")
	helper.Env = append(os.Environ(), helperRunDirEnv+"="+runDir, helperDiskEnv+"="+markerDisk(t, dir))
	// The helper leads its own process group, which is killed as a whole below: what a terminal's
	// Ctrl-C or a supervisor killing the group does to everything QEMU did not escape from.
	helper.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	out, err := helper.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := helper.Start(); err != nil {
		t.Fatal(err)
	}
	defer helper.Process.Kill()
	started := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if line := sc.Text(); strings.HasPrefix(line, "HELPER-") {
				started <- line
				return
			}
		}
		started <- "helper exited"
	}()
	var line string
	select {
	case line = <-started:
	case <-time.After(testStartTimeout):
		t.Fatal("helper did not start QEMU")
	}
	pid, err := strconv.Atoi(strings.TrimPrefix(line, "HELPER-STARTED "))
	if err != nil {
		t.Fatalf("helper: %s", line)
	}

	// kill -9 the caller of Start and its whole process group.
	if err := syscall.Kill(-helper.Process.Pid, syscall.SIGKILL); err != nil {
		t.Fatalf("kill helper process group: %v", err)
	}
	helper.Wait()

	time.Sleep(time.Second) // give a wrongly attached QEMU time to die
	if pids := qemuProcessesFor(runDir); len(pids) != 1 || pids[0] != pid {
		t.Fatalf("after the caller died, qemu processes for the run dir are %v, want [%d]", pids, pid)
	}
	ctx := context.Background()
	v, err := Attach(ctx, runDir)
	if err != nil {
		t.Fatalf("Attach after the caller died: %v", err)
	}
	if v.PID() != pid {
		t.Fatalf("Attach found pid %d, want %d", v.PID(), pid)
	}
	if st, err := v.Status(ctx); err != nil || st != StatusRunning {
		t.Fatalf("Status = %q, %v", st, err)
	}
	readSerialUntil(t, (&Config{RunDir: runDir}).SerialSocket(), bootMarker)
	if err := v.Stop(ctx, time.Second); err != nil {
		t.Fatalf("Stop of the attached VM: %v", err)
	}
	if pids := qemuProcessesFor(runDir); len(pids) != 0 {
		t.Fatalf("qemu still running after Stop: %v", pids)
	}
}
