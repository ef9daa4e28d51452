// Package lab_test runs system tests on the lab (internal/lab): three datacenters on this
// machine, with real namespaces, etcd members, agents, QEMU (TCG) and Ceph. One lab serves all
// tests of the package; it is brought up by the first test that needs it and torn down by
// TestMain, also when a test fails. Tests run in file order and build on each other's VMs.
package lab_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"kumo.dev/kumo/internal/lab"
)

var (
	binDir    string
	repoRoot  string
	theLab    *lab.State
	labErr    error
	labOnce   sync.Once
	labUpTime time.Duration
)

func TestMain(m *testing.M) {
	code := func() int {
		if isShort() {
			return m.Run()
		}
		wd, _ := os.Getwd()
		repoRoot = filepath.Clean(filepath.Join(wd, "..", ".."))
		dir, err := os.MkdirTemp("", "kumo-lab-bin-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer os.RemoveAll(dir)
		binDir = dir
		for _, pkg := range []string{"./cmd/kumod", "./cmd/kumo"} {
			cmd := exec.Command("go", "build", "-o", filepath.Join(dir, filepath.Base(pkg)), pkg)
			cmd.Dir = repoRoot
			cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
			if err := cmd.Run(); err != nil {
				fmt.Fprintf(os.Stderr, "build %s: %v\n", pkg, err)
				return 1
			}
		}
		code := m.Run()
		if theLab != nil || labErr != nil {
			if os.Getenv("KUMO_LAB_KEEP") != "" {
				fmt.Fprintf(os.Stderr, "KUMO_LAB_KEEP set: lab left in %s\n", labDir())
			} else if err := lab.Down(labDir(), os.Stderr); err != nil {
				fmt.Fprintln(os.Stderr, "tear the lab down:", err)
				code = 1
			}
		}
		return code
	}()
	os.Exit(code)
}

func isShort() bool {
	for _, a := range os.Args {
		if a == "-test.short" || a == "-test.short=true" {
			return true
		}
	}
	return false
}

func labDir() string { return filepath.Join(repoRoot, "_output", "lab-test") }

// needLab returns the shared lab, bringing it up at the first call.
func needLab(t *testing.T) *lab.State {
	t.Helper()
	if testing.Short() {
		t.Skip("builds a three-datacenter lab; skipped with -short")
	}
	labOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
		defer cancel()
		var out bytes.Buffer
		start := time.Now()
		theLab, labErr = lab.Up(ctx, lab.Config{Dir: labDir(), BinDir: binDir, RepoRoot: repoRoot,
			Datacenters: 3, NodesPerDC: 2, CephOSDSize: "2G"}, &out)
		labUpTime = time.Since(start)
		t.Logf("kumo-lab up (%v):\n%s", labUpTime.Round(100*time.Millisecond), out.String())
		if labErr != nil {
			labErr = fmt.Errorf("lab up: %w\n%s", labErr, logTails(labDir()))
		}
	})
	if labErr != nil {
		t.Fatal(labErr)
	}
	return theLab
}

// logTails prints the end of the lab's logs, for a failed bring-up.
func logTails(dir string) string {
	var b strings.Builder
	logs, _ := filepath.Glob(filepath.Join(dir, "logs", "*.log"))
	for _, l := range logs {
		data, _ := os.ReadFile(l)
		if len(data) > 1500 {
			data = data[len(data)-1500:]
		}
		fmt.Fprintf(&b, "----- %s -----\n%s\n", l, data)
	}
	return b.String()
}

// Result is what a command printed and how it ended.
type Result struct {
	Stdout, Stderr string
	Err            error
}

func (r Result) String() string {
	return fmt.Sprintf("err=%v\nstdout:\n%s\nstderr:\n%s", r.Err, r.Stdout, r.Stderr)
}

// kumo runs the CLI with a deadline.
func kumo(kubeconfig, stdin string, args ...string) Result {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(binDir, "kumo"), append([]string{"--kubeconfig", kubeconfig}, args...)...)
	cmd.Stdin = strings.NewReader(stdin)
	var so, se bytes.Buffer
	cmd.Stdout, cmd.Stderr = &so, &se
	err := cmd.Run()
	return Result{so.String(), se.String(), err}
}

func mustKumo(t *testing.T, kubeconfig string, args ...string) string {
	t.Helper()
	r := kumo(kubeconfig, "", args...)
	if r.Err != nil {
		t.Fatalf("kumo %s: %s", strings.Join(args, " "), r)
	}
	return r.Stdout
}

func eventually(t *testing.T, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var why string
	for {
		var ok bool
		if ok, why = cond(); ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s: %s", timeout, what, why)
		}
		time.Sleep(500 * time.Millisecond)
	}
}
