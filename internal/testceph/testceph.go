// Package testceph starts a real Ceph cluster for tests (one mon, three OSDs in three datacenter
// buckets) through hack/ceph/up.sh, shared by a test binary and torn down at its end.
//
// The cluster is the one hack/ceph/up.sh describes: cephx on, a replicated rule "rep-dc" with one
// replica per datacenter (dc1, dc2, dc3), an rbd pool "kumo" and a user client.kumo limited to it.
// Bringing it up takes about 10 s once the Debian packages are installed (up.sh installs them if
// needed, which requires root and apt). Typical use, from TestMain:
//
//	c, err := testceph.Start(ctx, repoRoot)
//	...
//	code := m.Run()
//	c.Stop()
//
// Setting KUMO_CEPH_DIR keeps one cluster across test runs: Start brings it up there (or reuses
// it when it is already running) and Stop leaves it alone; remove it with hack/ceph/down.sh.
package testceph

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Cluster is a running test cluster. Conf is usable by ceph, rbd and QEMU's rbd driver
// (conf=...); Keyring and User are the tenant-facing client.kumo credentials, AdminKeyring the
// client.admin ones.
type Cluster struct {
	Dir          string // all of the cluster's state, logs and sockets
	Conf         string // Dir/ceph.conf
	Keyring      string // client.<User>'s keyring
	AdminKeyring string // client.admin's keyring
	Pool         string // the rbd pool, "kumo"
	User         string // the rbd user's id (without "client."), "kumo"

	repoRoot string
	reused   bool // Dir came from $KUMO_CEPH_DIR: never torn down by Stop

	stopOnce sync.Once
	stopErr  error
	// The reaper runs down.sh when this process dies without calling Stop (a test timeout panic,
	// a kill): it waits for EOF on a pipe whose write end only this process holds.
	reaper     *exec.Cmd
	reaperPipe io.WriteCloser
}

// EnvDir names a directory for a cluster that outlives the test binary (see the package doc).
const EnvDir = "KUMO_CEPH_DIR"

// RepoRoot finds the repository root (the directory holding hack/ceph/up.sh) from the working
// directory upwards; go test runs a package's tests in the package's directory.
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "hack", "ceph", "up.sh")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("testceph: hack/ceph/up.sh not found above the working directory")
		}
		dir = parent
	}
}

// Start runs hack/ceph/up.sh in a temp dir (or reuses $KUMO_CEPH_DIR if set and running) and
// returns the cluster; Stop runs down.sh (unless reused). If $KUMO_CEPH_DIR is set but holds no
// running cluster, up.sh starts one there and it is kept too.
func Start(ctx context.Context, repoRoot string) (*Cluster, error) {
	up := filepath.Join(repoRoot, "hack", "ceph", "up.sh")
	if _, err := os.Stat(up); err != nil {
		return nil, fmt.Errorf("testceph: %w", err)
	}
	c := &Cluster{repoRoot: repoRoot}
	if dir := os.Getenv(EnvDir); dir != "" {
		abs, err := filepath.Abs(dir)
		if err != nil {
			return nil, fmt.Errorf("testceph: %s: %w", EnvDir, err)
		}
		c.Dir, c.reused = abs, true
	} else {
		// Short names: admin socket paths in Dir/run must stay under the 107-byte limit.
		dir, err := os.MkdirTemp("", "kceph-")
		if err != nil {
			return nil, fmt.Errorf("testceph: %w", err)
		}
		c.Dir = dir
		c.startReaper()
	}

	cmd := exec.CommandContext(ctx, up, c.Dir)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.WaitDelay = 10 * time.Second
	if err := cmd.Run(); err != nil {
		err = fmt.Errorf("testceph: %s %s: %w\n%s", up, c.Dir, err, tail(stderr.String(), 60))
		if !c.reused {
			if serr := c.Stop(); serr != nil {
				err = errors.Join(err, serr)
			}
		}
		return nil, err
	}
	if err := c.readEnv(); err != nil {
		if !c.reused {
			_ = c.Stop()
		}
		return nil, err
	}
	return c, nil
}

// readEnv fills the paths and names from Dir/env, the file up.sh writes.
func (c *Cluster) readEnv() error {
	f, err := os.Open(filepath.Join(c.Dir, "env"))
	if err != nil {
		return fmt.Errorf("testceph: %w", err)
	}
	defer f.Close()
	env := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), "="); ok {
			env[k] = v
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("testceph: reading env: %w", err)
	}
	c.Conf, c.Keyring, c.AdminKeyring = env["CEPH_CONF"], env["CEPH_KEYRING"], env["CEPH_ADMIN_KEYRING"]
	c.Pool, c.User = env["CEPH_POOL"], env["CEPH_USER"]
	if c.Conf == "" || c.Keyring == "" || c.AdminKeyring == "" || c.Pool == "" || c.User == "" {
		return fmt.Errorf("testceph: incomplete %s/env: %v", c.Dir, env)
	}
	return nil
}

// startReaper starts `down.sh Dir` in its own session, blocked until this process closes the pipe
// (Stop does; the kernel does when the process dies). Best effort: without it a crashed test
// binary leaves its daemons running.
func (c *Cluster) startReaper() {
	down := filepath.Join(c.repoRoot, "hack", "ceph", "down.sh")
	// $0 and $1 are down.sh and Dir; `cat` returns at EOF, i.e. when we are gone.
	cmd := exec.Command("/bin/sh", "-c", `cat >/dev/null; exec "$0" "$1"`, down, c.Dir)
	// Own session: survives the signal that kills the test's process group. Stdout and stderr
	// stay /dev/null so that `go test` does not wait for the reaper on the binary's output pipe.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	w, err := cmd.StdinPipe()
	if err != nil {
		return
	}
	if err := cmd.Start(); err != nil {
		w.Close()
		return
	}
	c.reaper, c.reaperPipe = cmd, w
}

// Stop stops the daemons and removes Dir by running hack/ceph/down.sh, unless the cluster was
// reused from $KUMO_CEPH_DIR. It is safe to call more than once.
func (c *Cluster) Stop() error {
	if c == nil || c.reused {
		return nil
	}
	c.stopOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		down := filepath.Join(c.repoRoot, "hack", "ceph", "down.sh")
		out, err := exec.CommandContext(ctx, down, c.Dir).CombinedOutput()
		if err != nil {
			c.stopErr = fmt.Errorf("testceph: %s %s: %w\n%s", down, c.Dir, err, out)
		}
		if c.reaper != nil {
			c.reaperPipe.Close() // the reaper's down.sh finds nothing left to do
			_ = c.reaper.Wait()
		}
	})
	return c.stopErr
}

// Ceph runs `ceph -c Conf --keyring AdminKeyring args...` (as client.admin) and returns its
// stdout; a failure's error includes stderr.
func (c *Cluster) Ceph(ctx context.Context, args ...string) (string, error) {
	return run(ctx, "ceph", append([]string{"-c", c.Conf, "--keyring", c.AdminKeyring}, args...)...)
}

// RBD runs `rbd -c Conf --keyring AdminKeyring args...` (as client.admin) and returns its stdout;
// a failure's error includes stderr. Pass "--id", c.User, "--keyring", c.Keyring to act as the
// tenant-facing user instead (later flags win).
func (c *Cluster) RBD(ctx context.Context, args ...string) (string, error) {
	return run(ctx, "rbd", append([]string{"-c", c.Conf, "--keyring", c.AdminKeyring}, args...)...)
}

func run(ctx context.Context, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err,
			strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

// tail returns the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
