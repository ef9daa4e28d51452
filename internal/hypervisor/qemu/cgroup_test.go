package qemu

import (
	"bufio"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// fakeCgroupRoot is a directory laid out like a cgroup2 root offering the given controllers. Unlike
// cgroupfs it does not create control files on mkdir, which the code under test must not rely on.
func fakeCgroupRoot(t *testing.T, controllers string) string {
	t.Helper()
	root := t.TempDir()
	for name, content := range map[string]string{"cgroup.controllers": controllers, "cgroup.subtree_control": ""} {
		if err := os.WriteFile(filepath.Join(root, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestSetupCgroupLimitsCPUAndMemoryAndMovesQEMU(t *testing.T) {
	root := fakeCgroupRoot(t, "cpuset cpu io memory pids")
	// kumo.slice as the kernel would present it once created under a root with cpu and memory on.
	slice := filepath.Join(root, cgroupSlice)
	if err := os.Mkdir(slice, 0o755); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(slice, "cgroup.controllers"), []byte("cpu memory"), 0o644)

	cfg := Config{Name: "tenant-a_vm1", CPUs: 2, MemoryMiB: 1024}
	path, err := setupCgroup(root, &cfg, 4242)
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(root, "kumo.slice", "tenant-a_vm1"); path != want {
		t.Fatalf("cgroup path %q, want %q", path, want)
	}
	for file, want := range map[string]string{
		filepath.Join(root, "cgroup.subtree_control"):  "+cpu +memory",
		filepath.Join(slice, "cgroup.subtree_control"): "+cpu +memory",
		filepath.Join(path, "cpu.max"):                 "200000 100000",
		filepath.Join(path, "memory.max"):              "1342177280", // (1024 + 256) MiB
		filepath.Join(path, "cgroup.procs"):            "4242",
	} {
		if got := readFile(t, file); got != want {
			t.Errorf("%s = %q, want %q", file, got, want)
		}
	}

}

func TestRemoveCgroupToleratesMissingDirectory(t *testing.T) {
	// A cgroupfs directory is empty to rmdir once its processes are gone, like this one.
	path := filepath.Join(t.TempDir(), "vm")
	if err := os.Mkdir(path, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := removeCgroup(path); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Fatalf("cgroup still there: %v", err)
	}
	if err := removeCgroup(path); err != nil {
		t.Fatalf("removing a removed cgroup: %v", err)
	}
}

func TestSetupCgroupSkipsControllersTheHostDoesNotOffer(t *testing.T) {
	root := fakeCgroupRoot(t, "pids")
	cfg := Config{Name: "vm", CPUs: 1, MemoryMiB: 256}
	path, err := setupCgroup(root, &cfg, 7)
	if err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, filepath.Join(root, "cgroup.subtree_control")); got != "" {
		t.Errorf("enabled unavailable controllers: %q", got)
	}
	for _, f := range []string{"cpu.max", "memory.max"} {
		if _, err := os.Stat(filepath.Join(path, f)); !os.IsNotExist(err) {
			t.Errorf("%s written without its controller", f)
		}
	}
	if got := readFile(t, filepath.Join(path, "cgroup.procs")); got != "7" {
		t.Errorf("cgroup.procs = %q", got)
	}
}

func TestCgroupsUsableRejectsNonCgroupFilesystems(t *testing.T) {
	if err := cgroupsUsable(t.TempDir()); err == nil || !strings.Contains(err.Error(), "not a cgroup2 mount") {
		t.Fatalf("cgroupsUsable(tmpdir) = %v", err)
	}
}

func TestCgroupFromProcFile(t *testing.T) {
	for content, want := range map[string]string{
		"0::/kumo.slice/tenant-a_vm1\n":                   "/sys/fs/cgroup/kumo.slice/tenant-a_vm1",
		"12:cpu:/\n0::/system.slice/kumo-agent.service\n": "",
		"1:name=systemd:/kumo.slice/x\n0::/\n":            "",
		"0::/kumo.slice\n":                                "",
	} {
		got := cgroupFromProcFile("/sys/fs/cgroup", bufio.NewScanner(strings.NewReader(content)))
		if got != want {
			t.Errorf("%q → %q, want %q", content, got, want)
		}
	}
}

// TestStartPlacesQEMUInItsCgroup runs against the real cgroup2 hierarchy: /sys/fs/cgroup, or on
// hybrid hosts the controller-less /sys/fs/cgroup/unified, which still has real cgroupfs semantics.
func TestStartPlacesQEMUInItsCgroup(t *testing.T) {
	requireQEMU(t)
	if cgroupsUsable(cgroupRoot) != nil {
		const unified = "/sys/fs/cgroup/unified"
		if err := cgroupsUsable(unified); err != nil {
			t.Skipf("no writable cgroup2 hierarchy: %v", err)
		}
		old := cgroupRoot
		cgroupRoot = unified
		t.Cleanup(func() {
			cgroupRoot = old
			os.Remove(filepath.Join(unified, cgroupSlice)) // only if no other VM uses it
		})
	}
	dir := shortTempDir(t)
	cfg := tinyConfig("vm-cgroup", filepath.Join(dir, "run"), markerDisk(t, dir))
	v, _ := startTestVM(t, cfg)

	want := filepath.Join(cgroupRoot, cgroupSlice, "vm-cgroup")
	if v.CgroupPath() != want {
		t.Fatalf("CgroupPath = %q, want %q", v.CgroupPath(), want)
	}
	if got := cgroupOf(v.PID()); got != want {
		t.Fatalf("/proc/%d/cgroup places QEMU in %q, want %q", v.PID(), got, want)
	}
	if err := v.Close(); err != nil {
		t.Fatal(err)
	}
	a, err := Attach(context.Background(), cfg.RunDir)
	if err != nil {
		t.Fatal(err)
	}
	if a.CgroupPath() != want {
		t.Errorf("attached CgroupPath = %q, want %q", a.CgroupPath(), want)
	}
	if err := a.Stop(context.Background(), 0); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(want); !os.IsNotExist(err) {
		t.Fatalf("cgroup %s not removed after Stop: %v", want, err)
	}
}
