package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"kumo.dev/kumo/pkg/client"
)

// readyTimeout bounds how long the server may take to answer /readyz with ok.
const readyTimeout = 60 * time.Second

// moduleRoot is the directory of the kumo module the current directory belongs to.
func moduleRoot(ctx context.Context) (string, error) {
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", errors.New("not inside the kumo module: run from the repository or pass --kumod, --kumo and --images-dir")
	}
	return filepath.Dir(gomod), nil
}

// buildBinaries builds ./cmd/kumod and ./cmd/kumo into dir.
func buildBinaries(ctx context.Context, dir string) (kumod, kumo string, err error) {
	root, err := moduleRoot(ctx)
	if err != nil {
		return "", "", err
	}
	slog.Info("building kumod and kumo", "out", dir)
	start := time.Now()
	cmd := exec.CommandContext(ctx, "go", "build", "-o", dir+string(filepath.Separator), "./cmd/kumod", "./cmd/kumo")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", "", fmt.Errorf("go build ./cmd/kumod ./cmd/kumo: %w\n%s", err, out)
	}
	slog.Info("built", "took", time.Since(start).Round(time.Millisecond))
	return filepath.Join(dir, "kumod"), filepath.Join(dir, "kumo"), nil
}

// tailBuffer keeps the last limit bytes written to it.
type tailBuffer struct {
	mu    sync.Mutex
	buf   []byte
	limit int
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if over := len(t.buf) - t.limit; over > 0 {
		t.buf = append(t.buf[:0], t.buf[over:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) tail(n int) string {
	t.mu.Lock()
	defer t.mu.Unlock()
	lines := bytes.Split(bytes.TrimRight(t.buf, "\n"), []byte("\n"))
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return string(bytes.Join(lines, []byte("\n")))
}

// server is a `kumod all-in-one` subprocess: API server plus a node agent running QEMU under TCG.
type server struct {
	cmd     *exec.Cmd
	dataDir string
	stderr  *tailBuffer
	exited  chan struct{}
	waitErr error
}

// startServer starts kumod all-in-one on free loopback ports with its data in dataDir and its
// output in logPath. The node is large enough never to refuse a VM for capacity.
func startServer(bin, dataDir, imagesDir, logPath string) (*server, error) {
	ports, err := freePorts(3)
	if err != nil {
		return nil, err
	}
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("create server log: %w", err)
	}
	s := &server{dataDir: dataDir, stderr: &tailBuffer{limit: 64 << 10}, exited: make(chan struct{})}
	s.cmd = exec.Command(bin, "all-in-one",
		"--data-dir", dataDir,
		"--port", strconv.Itoa(ports[0]),
		"--etcd-client-port", strconv.Itoa(ports[1]),
		"--etcd-peer-port", strconv.Itoa(ports[2]),
		"--accel", "tcg", "--images-dir", imagesDir,
		"--node", "aio", "--datacenter", "dc1", "--cpus", "64", "--memory", "256Gi")
	s.cmd.Stdout = logFile
	s.cmd.Stderr = io.MultiWriter(logFile, s.stderr)
	if err := s.cmd.Start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	slog.Info("kumod started", "pid", s.cmd.Process.Pid, "port", ports[0], "data", dataDir, "log", logPath)
	go func() {
		s.waitErr = s.cmd.Wait()
		logFile.Close()
		close(s.exited)
	}()
	return s, nil
}

func (s *server) kubeconfig() string { return filepath.Join(s.dataDir, "admin.kubeconfig") }

// failure wraps err with the tail of the server's output.
func (s *server) failure(err error) error {
	return fmt.Errorf("%w\n--- kumod output (tail) ---\n%s\n---", err, s.stderr.tail(40))
}

// annotate adds the server's output tail to err when the server has died.
func (s *server) annotate(err error) error {
	select {
	case <-s.exited:
		return s.failure(errors.Join(err, fmt.Errorf("kumod exited: %v", s.waitErr)))
	default:
		return err
	}
}

// waitReady waits until the admin kubeconfig exists and /readyz answers ok.
func (s *server) waitReady(ctx context.Context) (*rest.Config, error) {
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	start := time.Now()
	var lastErr error = errors.New("admin kubeconfig not written yet")
	for {
		select {
		case <-s.exited:
			return nil, s.failure(fmt.Errorf("kumod exited before becoming ready: %v", s.waitErr))
		case <-ctx.Done():
			return nil, s.failure(fmt.Errorf("kumod not ready after %s (last: %v)", readyTimeout, lastErr))
		case <-time.After(200 * time.Millisecond):
		}
		if _, err := os.Stat(s.kubeconfig()); err != nil {
			continue
		}
		cfg, err := clientcmd.BuildConfigFromFlags("", s.kubeconfig())
		if err != nil {
			lastErr = fmt.Errorf("load %s: %w", s.kubeconfig(), err)
			continue
		}
		c, err := client.New(cfg)
		if err != nil {
			return nil, fmt.Errorf("client from admin kubeconfig: %w", err)
		}
		rctx, rcancel := context.WithTimeout(ctx, 5*time.Second)
		body, err := c.Core.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(rctx)
		rcancel()
		if err == nil && strings.TrimSpace(string(body)) == "ok" {
			slog.Info("kumod ready", "after", time.Since(start).Round(time.Millisecond), "url", cfg.Host)
			return cfg, nil
		}
		lastErr = fmt.Errorf("GET /readyz: %q %v", body, err)
	}
}

// stop sends SIGTERM and waits for the server to exit (killing it after 30s). The agent leaves
// its QEMU processes running on exit; the caller kills those.
func (s *server) stop() error {
	select {
	case <-s.exited:
		return nil
	default:
	}
	if err := s.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		return fmt.Errorf("SIGTERM kumod: %w", err)
	}
	select {
	case <-s.exited:
		return nil
	case <-time.After(30 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.exited
		return s.failure(errors.New("kumod did not exit within 30s of SIGTERM; killed"))
	}
}

// createTenant runs `kumo tenant create NAME -o FILE` as the administrator and returns the tenant
// user's kubeconfig.
func createTenant(ctx context.Context, kumo, adminKubeconfig, name, dir string) (*rest.Config, error) {
	path := filepath.Join(dir, name+".kubeconfig")
	cmd := exec.CommandContext(ctx, kumo, "tenant", "create", name, "-o", path)
	cmd.Env = append(os.Environ(), "KUBECONFIG="+adminKubeconfig, "HOME="+dir)
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("kumo tenant create %s: %w\n%s", name, err, out)
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", path)
	if err != nil {
		return nil, fmt.Errorf("load %s: %w", path, err)
	}
	cfg.QPS, cfg.Burst = 1000, 1000
	return cfg, nil
}

// freePorts returns n distinct free loopback TCP ports.
func freePorts(n int) ([]int, error) {
	ls := make([]net.Listener, 0, n)
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	ports := make([]int, 0, n)
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("pick a free loopback port: %w", err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}
