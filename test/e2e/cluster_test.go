// Package e2e holds Kumo's system tests: real kumod processes with embedded etcd, driven through
// the kumo CLI, a kubectl built from k8s.io/kubectl, and client-go. They are slow, so -short skips
// them; CI runs them all.
package e2e

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"kumo.dev/kumo/pkg/client"
)

// Binaries built once for the whole package.
var bins struct {
	dir                  string
	kumod, kumo, kubectl string
}

// shared is the cluster most tests use; tests that restart a server start their own.
var (
	shared     *Cluster
	sharedErr  error
	sharedOnce sync.Once
)

func TestMain(m *testing.M) {
	code := func() int {
		testingShort := false
		for _, a := range os.Args {
			if a == "-test.short" || a == "-test.short=true" {
				testingShort = true
			}
		}
		if testingShort {
			return m.Run()
		}
		dir, err := os.MkdirTemp("", "kumo-e2e-bin-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer os.RemoveAll(dir)
		bins.dir = dir
		for _, b := range []struct {
			dst *string
			pkg string
		}{{&bins.kumod, "./cmd/kumod"}, {&bins.kumo, "./cmd/kumo"}, {&bins.kubectl, "./test/kubectl"}} {
			*b.dst = filepath.Join(dir, filepath.Base(b.pkg))
			cmd := exec.Command("go", "build", "-o", *b.dst, b.pkg)
			cmd.Dir = repoRoot()
			cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
			if err := cmd.Run(); err != nil {
				fmt.Fprintf(os.Stderr, "build %s: %v\n", b.pkg, err)
				return 1
			}
		}
		code := m.Run()
		if shared != nil {
			shared.Stop()
		}
		return code
	}()
	os.Exit(code)
}

func repoRoot() string {
	wd, _ := os.Getwd()
	return filepath.Clean(filepath.Join(wd, "..", ".."))
}

// needCluster skips slow tests under -short and returns the shared cluster.
func needCluster(t *testing.T) *Cluster {
	t.Helper()
	if testing.Short() {
		t.Skip("system test: needs a running kumod (skipped with -short)")
	}
	sharedOnce.Do(func() {
		dir, err := os.MkdirTemp("", "kumo-e2e-shared-")
		if err != nil {
			sharedErr = err
			return
		}
		shared, sharedErr = StartCluster(dir, "server")
	})
	if sharedErr != nil {
		t.Fatalf("start shared cluster: %v", sharedErr)
	}
	return shared
}

// Cluster is one kumod process (role server or all-in-one) with its data directory.
type Cluster struct {
	Dir                        string
	Role                       string
	Extra                      []string
	Port, EtcdClient, EtcdPeer int
	cmd                        *exec.Cmd
	log                        *syncBuffer
	done                       chan struct{}
}

// StartCluster starts kumod ROLE on free loopback ports with its data in dir; extra flags follow.
func StartCluster(dir, role string, extra ...string) (*Cluster, error) {
	c := &Cluster{Dir: dir, Role: role, Extra: extra, Port: freePort(), EtcdClient: freePort(), EtcdPeer: freePort()}
	return c, c.Start()
}

// imagesDir is the guest image cache make images fills.
func imagesDir() string {
	if d := os.Getenv("KUMO_IMAGES_DIR"); d != "" {
		return d
	}
	return filepath.Join(repoRoot(), "_output", "images")
}

// agentFlags are the flags every test agent gets: TCG (KVM hangs on the test machines) and
// the test images.
// agentFlags are every agent's flags; the tests serve images on 127.0.0.1, which imports reach
// only because it is allow-listed.
func agentFlags() []string {
	return []string{"--accel", "tcg", "--images-dir", imagesDir(),
		"--import-allowed-networks", "127.0.0.1/32", "--image-import-allowed-networks", "127.0.0.1/32"}
}

// Start (re)starts the server process on the cluster's directory and ports.
func (c *Cluster) Start() error {
	c.log = &syncBuffer{}
	args := append([]string{c.Role, "--data-dir", c.Dir,
		"--port", fmt.Sprint(c.Port), "--etcd-client-port", fmt.Sprint(c.EtcdClient), "--etcd-peer-port", fmt.Sprint(c.EtcdPeer)}, c.Extra...)
	c.cmd = exec.Command(bins.kumod, args...)
	c.cmd.Stdout, c.cmd.Stderr = c.log, c.log
	if err := c.cmd.Start(); err != nil {
		return err
	}
	c.done = make(chan struct{})
	go func() { _ = c.cmd.Wait(); close(c.done) }()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-c.done:
			return fmt.Errorf("kumod exited early:\n%s", c.log.String())
		default:
		}
		if cfg, err := c.restConfig(c.AdminKubeconfig()); err == nil {
			if hc, err := rest.HTTPClientFor(cfg); err == nil {
				if resp, err := hc.Get(cfg.Host + "/readyz"); err == nil {
					resp.Body.Close()
					if resp.StatusCode == http.StatusOK {
						return nil
					}
				}
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	c.Stop()
	return fmt.Errorf("kumod not ready after 60s:\n%s", c.log.String())
}

// Stop terminates the server and waits for it.
func (c *Cluster) Stop() {
	if c.cmd == nil || c.cmd.Process == nil {
		return
	}
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.done:
	case <-time.After(20 * time.Second):
		_ = c.cmd.Process.Kill()
		<-c.done
	}
}

// Log is what the server printed so far.
func (c *Cluster) Log() string { return c.log.String() }

// URL is the API's address.
func (c *Cluster) URL() string { return fmt.Sprintf("https://127.0.0.1:%d", c.Port) }

// AdminKubeconfig is the administrator's kubeconfig the server wrote.
func (c *Cluster) AdminKubeconfig() string { return filepath.Join(c.Dir, "admin.kubeconfig") }

func (c *Cluster) restConfig(kubeconfig string) (*rest.Config, error) {
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return nil, err
	}
	cfg.QPS, cfg.Burst = 1000, 1000
	return cfg, nil
}

// Client returns typed clients authenticated by kubeconfig.
func (c *Cluster) Client(t *testing.T, kubeconfig string) *client.Client {
	t.Helper()
	cfg, err := c.restConfig(kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	cl, err := client.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return cl
}

// Admin returns clients with the administrator's credentials.
func (c *Cluster) Admin(t *testing.T) *client.Client { return c.Client(t, c.AdminKubeconfig()) }

// NewTenant creates a tenant with kumo tenant create and returns its user's kubeconfig.
func (c *Cluster) NewTenant(t *testing.T, name string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name+".kubeconfig")
	c.MustKumo(t, c.AdminKubeconfig(), "tenant", "create", name, "-o", path)
	return path
}

// Result is what a command printed and how it ended.
type Result struct {
	Stdout, Stderr string
	Err            error
}

func (r Result) String() string {
	return fmt.Sprintf("err=%v\nstdout:\n%s\nstderr:\n%s", r.Err, r.Stdout, r.Stderr)
}

// Run runs a binary with KUBECONFIG=kubeconfig and stdin, within a minute.
func Run(kubeconfig, stdin, bin string, args ...string) Result {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append(os.Environ(), "KUBECONFIG="+kubeconfig, "HOME="+os.TempDir())
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	return Result{Stdout: out.String(), Stderr: errb.String(), Err: err}
}

// Kumo runs the kumo CLI.
func (c *Cluster) Kumo(kubeconfig string, args ...string) Result {
	return Run(kubeconfig, "", bins.kumo, args...)
}

// MustKumo runs the kumo CLI and fails the test if it fails.
func (c *Cluster) MustKumo(t *testing.T, kubeconfig string, args ...string) string {
	t.Helper()
	r := c.Kumo(kubeconfig, args...)
	if r.Err != nil {
		t.Fatalf("kumo %s: %s", strings.Join(args, " "), r)
	}
	return r.Stdout
}

// Kubectl runs the kubectl built from k8s.io/kubectl.
func (c *Cluster) Kubectl(kubeconfig string, args ...string) Result {
	return Run(kubeconfig, "", bins.kubectl, args...)
}

// MustKubectl runs kubectl and fails the test if it fails.
func (c *Cluster) MustKubectl(t *testing.T, kubeconfig string, args ...string) string {
	t.Helper()
	r := c.Kubectl(kubeconfig, args...)
	if r.Err != nil {
		t.Fatalf("kubectl %s: %s", strings.Join(args, " "), r)
	}
	return r.Stdout
}

func freePort() int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// eventually polls cond until it holds or the timeout passes.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if cond() {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("timed out after %s waiting for %s", timeout, what)
}

// uniqueName gives each test its own tenant names on the shared cluster.
func uniqueName(prefix string) string {
	return fmt.Sprintf("%s%d", prefix, time.Now().UnixNano()%1_000_000_000)
}

func (c *Cluster) clientFor(t *testing.T, cfg *rest.Config) *client.Client {
	t.Helper()
	cl, err := client.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return cl
}

// runEnv runs bin with extra environment variables overriding the test's.
func runEnv(env []string, bin string, args ...string) Result {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append(os.Environ(), env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	return Result{Stdout: out.String(), Stderr: errb.String(), Err: err}
}

// syncBuffer is a bytes.Buffer safe for a process writing and a test reading.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Agent is a kumod agent process of a test cluster.
type Agent struct {
	Node, Datacenter, Dir string
	args                  []string
	cmd                   *exec.Cmd
	log                   *syncBuffer
	done                  chan struct{}
}

// StartAgent runs a separate kumod agent for node in datacenter dc against the cluster, with
// its own data directory and credentials from kumo node kubeconfig.
func (c *Cluster) StartAgent(t *testing.T, node, dc string, extra ...string) *Agent {
	t.Helper()
	dir := filepath.Join(t.TempDir(), node)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	kc := filepath.Join(dir, "node.kubeconfig")
	c.MustKumo(t, c.AdminKubeconfig(), "node", "kubeconfig", node, "-o", kc)
	a := &Agent{Node: node, Datacenter: dc, Dir: dir}
	a.args = append([]string{"agent", "--node", node, "--datacenter", dc, "--data-dir", dir, "--kubeconfig", kc}, append(agentFlags(), extra...)...)
	a.Start(t)
	t.Cleanup(func() { a.Kill(); killQEMUsUnder(dir) })
	return a
}

// Start (re)starts the agent process.
func (a *Agent) Start(t *testing.T) {
	t.Helper()
	a.log = &syncBuffer{}
	a.cmd = exec.Command(bins.kumod, a.args...)
	a.cmd.Stdout, a.cmd.Stderr = a.log, a.log
	if err := a.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	a.done = make(chan struct{})
	go func() { _ = a.cmd.Wait(); close(a.done) }()
}

// Kill kills the agent with SIGKILL, as a crash would.
func (a *Agent) Kill() {
	if a.cmd != nil && a.cmd.Process != nil {
		_ = a.cmd.Process.Kill()
		<-a.done
	}
}

// Log is what the agent printed.
func (a *Agent) Log() string { return a.log.String() }

// qemuPIDsUnder lists the QEMU processes whose command line mentions dir (their run directory).
func qemuPIDsUnder(dir string) []int {
	var pids []int
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		data, err := os.ReadFile(p)
		if err != nil || !bytes.Contains(data, []byte("qemu-system")) || !bytes.Contains(data, []byte(dir)) {
			continue
		}
		var pid int
		fmt.Sscanf(filepath.Base(filepath.Dir(p)), "%d", &pid)
		pids = append(pids, pid)
	}
	return pids
}

// killQEMUsUnder kills QEMU processes a test left behind.
func killQEMUsUnder(dir string) {
	for _, pid := range qemuPIDsUnder(dir) {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
}
