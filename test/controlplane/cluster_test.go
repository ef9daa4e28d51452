// Package controlplane holds the system tests of a replicated control plane: three real kumod
// servers on loopback (127.0.0.1, .2 and .3, the same ports on each, as in three datacenters),
// forming one embedded etcd cluster over TLS from a shared `kumod pki init`, electing one leader,
// and clients that fail over between them. The tests share one cluster; -short skips them.
package controlplane

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

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"kumo.dev/kumo/internal/failover"
	"kumo.dev/kumo/pkg/client"
)

// Short leader-election timings, as the lab uses.
var leaderFlags = []string{"--leader-elect-lease-duration", "3s", "--leader-elect-renew-deadline", "2s", "--leader-elect-retry-period", "500ms"}

var bins struct{ dir, kumod, kumo string }

var (
	shared     *Cluster
	sharedErr  error
	sharedOnce sync.Once
)

func TestMain(m *testing.M) {
	code := func() int {
		for _, a := range os.Args {
			if a == "-test.short" || a == "-test.short=true" {
				return m.Run()
			}
		}
		dir, err := os.MkdirTemp("", "kumo-cplane-bin-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer os.RemoveAll(dir)
		bins.dir = dir
		wd, _ := os.Getwd()
		root := filepath.Clean(filepath.Join(wd, "..", ".."))
		for _, b := range []struct {
			dst *string
			pkg string
		}{{&bins.kumod, "./cmd/kumod"}, {&bins.kumo, "./cmd/kumo"}} {
			*b.dst = filepath.Join(dir, filepath.Base(b.pkg))
			cmd := exec.Command("go", "build", "-o", *b.dst, b.pkg)
			cmd.Dir = root
			cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
			if err := cmd.Run(); err != nil {
				fmt.Fprintf(os.Stderr, "build %s: %v\n", b.pkg, err)
				return 1
			}
		}
		code := m.Run()
		if shared != nil {
			shared.Stop()
			os.RemoveAll(shared.Dir)
		}
		return code
	}()
	os.Exit(code)
}

// Cluster is three kumod servers of one control plane.
type Cluster struct {
	Dir                           string
	APIPort, EtcdClient, EtcdPeer int
	Servers                       []*Server
}

// Server is one kumod server process.
type Server struct {
	Name, IP, Dir string
	args          []string
	cmd           *exec.Cmd
	log           *syncBuffer
	done          chan struct{}
}

// needCluster skips under -short and returns the shared three-server cluster.
func needCluster(t *testing.T) *Cluster {
	t.Helper()
	if testing.Short() {
		t.Skip("system test: starts three kumod servers (skipped with -short)")
	}
	sharedOnce.Do(func() {
		dir, err := os.MkdirTemp("", "kumo-cplane-")
		if err != nil {
			sharedErr = err
			return
		}
		shared, sharedErr = startCluster(dir, 3)
	})
	if sharedErr != nil {
		t.Fatalf("start the three servers: %v", sharedErr)
	}
	return shared
}

// freePorts finds n ports free on 127.0.0.1, .2 and .3 alike.
func freePorts(n int) []int {
	var out []int
	for len(out) < n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			panic(err)
		}
		p := l.Addr().(*net.TCPAddr).Port
		l.Close()
		ok := true
		for _, ip := range []string{"127.0.0.2", "127.0.0.3"} {
			l2, err := net.Listen("tcp", fmt.Sprintf("%s:%d", ip, p))
			if err != nil {
				ok = false
				break
			}
			l2.Close()
		}
		if ok {
			out = append(out, p)
		}
	}
	return out
}

func startCluster(dir string, n int) (*Cluster, error) {
	ports := freePorts(3)
	c := &Cluster{Dir: dir, APIPort: ports[0], EtcdClient: ports[1], EtcdPeer: ports[2]}
	pkiHome := filepath.Join(dir, "init")
	if out, err := exec.Command(bins.kumod, "pki", "init", "--data-dir", pkiHome).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("kumod pki init: %v: %s", err, out)
	}
	var initial, apis []string
	for i := 1; i <= n; i++ {
		ip := fmt.Sprintf("127.0.0.%d", i)
		initial = append(initial, fmt.Sprintf("s%d=https://%s:%d", i, ip, c.EtcdPeer))
		apis = append(apis, fmt.Sprintf("https://%s:%d", ip, c.APIPort))
	}
	for i := 1; i <= n; i++ {
		s := &Server{Name: fmt.Sprintf("s%d", i), IP: fmt.Sprintf("127.0.0.%d", i), Dir: filepath.Join(dir, fmt.Sprintf("s%d", i))}
		if err := copyDir(filepath.Join(pkiHome, "pki"), filepath.Join(s.Dir, "pki")); err != nil {
			return nil, err
		}
		s.args = c.serverArgs(s, strings.Join(initial, ","), strings.Join(apis, ","))
		c.Servers = append(c.Servers, s)
	}
	// The members bootstrap together: start all, then wait for each.
	for _, s := range c.Servers {
		if err := s.start(); err != nil {
			c.Stop()
			return nil, err
		}
	}
	for _, s := range c.Servers {
		if err := s.waitReady(3 * time.Minute); err != nil {
			c.Stop()
			return nil, err
		}
	}
	return c, nil
}

func (c *Cluster) serverArgs(s *Server, initial, apis string) []string {
	return append([]string{"server", "--data-dir", s.Dir, "--bind-address", s.IP, "--port", fmt.Sprint(c.APIPort),
		"--etcd-name", s.Name, "--etcd-advertise-address", s.IP,
		"--etcd-client-port", fmt.Sprint(c.EtcdClient), "--etcd-peer-port", fmt.Sprint(c.EtcdPeer),
		"--etcd-initial-cluster", initial, "--api-servers", apis}, leaderFlags...)
}

func copyDir(src, dst string) error {
	if err := os.MkdirAll(dst, 0o700); err != nil {
		return err
	}
	entries, err := os.ReadDir(src)
	if err != nil {
		return err
	}
	for _, e := range entries {
		data, err := os.ReadFile(filepath.Join(src, e.Name()))
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dst, e.Name()), data, 0o600); err != nil {
			return err
		}
	}
	return nil
}

// Server returns the server named name.
func (c *Cluster) Server(name string) *Server {
	for _, s := range c.Servers {
		if s.Name == name {
			return s
		}
	}
	return nil
}

// Stop stops every server.
func (c *Cluster) Stop() {
	for _, s := range c.Servers {
		s.Stop()
	}
}

func (s *Server) start() error {
	s.log = &syncBuffer{}
	s.cmd = exec.Command(bins.kumod, s.args...)
	s.cmd.Stdout, s.cmd.Stderr = s.log, s.log
	if err := s.cmd.Start(); err != nil {
		return err
	}
	s.done = make(chan struct{})
	go func() { _ = s.cmd.Wait(); close(s.done) }()
	return nil
}

// URL is the server's API address.
func (s *Server) URL(c *Cluster) string { return fmt.Sprintf("https://%s:%d", s.IP, c.APIPort) }

// Kubeconfig is the admin kubeconfig the server wrote (its own URL first).
func (s *Server) Kubeconfig() string { return filepath.Join(s.Dir, "admin.kubeconfig") }

func (s *Server) waitReady(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		select {
		case <-s.done:
			return fmt.Errorf("kumod %s exited early:\n%s", s.Name, s.log.String())
		default:
		}
		if cfg, err := clientcmd.BuildConfigFromFlags("", s.Kubeconfig()); err == nil {
			if hc, err := rest.HTTPClientFor(cfg); err == nil {
				hc.Timeout = 2 * time.Second
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
	return fmt.Errorf("kumod %s not ready after %s:\n%s", s.Name, timeout, s.log.String())
}

// Kill kills the server with SIGKILL, as a power loss would.
func (s *Server) Kill() {
	if s.cmd != nil && s.cmd.Process != nil {
		_ = s.cmd.Process.Signal(syscall.SIGKILL)
		<-s.done
	}
}

// Restart starts a killed server again on its data.
func (s *Server) Restart() error {
	if err := s.start(); err != nil {
		return err
	}
	return s.waitReady(2 * time.Minute)
}

// Stop terminates the server and waits for it.
func (s *Server) Stop() {
	if s.cmd == nil || s.cmd.Process == nil || s.done == nil {
		return
	}
	select {
	case <-s.done:
		return
	default:
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(20 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.done
	}
}

// Live reports whether the process runs.
func (s *Server) Live() bool {
	select {
	case <-s.done:
		return false
	default:
		return s.cmd != nil
	}
}

// Log is what the server printed.
func (s *Server) Log() string { return s.log.String() }

// adminConfig is a failover client configuration from server s's admin kubeconfig.
func adminConfig(t *testing.T, s *Server) *rest.Config {
	t.Helper()
	loader := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(&clientcmd.ClientConfigLoadingRules{ExplicitPath: s.Kubeconfig()}, nil)
	cfg, err := loader.ClientConfig()
	if err != nil {
		t.Fatal(err)
	}
	urls, err := failover.KubeconfigServers(loader)
	if err != nil {
		t.Fatal(err)
	}
	servers, err := failover.NewServers(urls)
	if err != nil {
		t.Fatal(err)
	}
	failover.Configure(cfg, servers)
	cfg.QPS, cfg.Burst = 1000, 1000
	return cfg
}

func admin(t *testing.T, s *Server) *client.Client {
	t.Helper()
	c, err := client.New(adminConfig(t, s))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// leader reads the holder of the controllers' Lease through c.
func leader(ctx context.Context, c *client.Client) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	l, err := c.Core.CoordinationV1().Leases("kumo-system").Get(ctx, "kumo-controllers", metav1.GetOptions{})
	if err != nil {
		return "", err
	}
	if l.Spec.HolderIdentity == nil {
		return "", nil
	}
	return *l.Spec.HolderIdentity, nil
}

// eventually polls cond until it holds or the timeout passes.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if cond() {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("timed out after %s waiting for %s", timeout, what)
}

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
