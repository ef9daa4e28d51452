package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
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

// buildKumod builds ./cmd/kumod of the module the current directory belongs to into dir.
func buildKumod(ctx context.Context, dir string) (string, error) {
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", errors.New("not inside the kumo module: run from the repository or pass --kumod")
	}
	bin := filepath.Join(dir, "kumod")
	slog.Info("building kumod", "out", bin)
	start := time.Now()
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/kumod")
	cmd.Dir = filepath.Dir(gomod)
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/kumod: %w\n%s", err, out)
	}
	slog.Info("built kumod", "took", time.Since(start).Round(time.Millisecond))
	return bin, nil
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

// tail returns the last n lines written.
func (t *tailBuffer) tail(n int) string {
	t.mu.Lock()
	defer t.mu.Unlock()
	lines := bytes.Split(bytes.TrimRight(t.buf, "\n"), []byte("\n"))
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return string(bytes.Join(lines, []byte("\n")))
}

// server is a kumod all-in-one subprocess.
type server struct {
	cmd        *exec.Cmd
	dataDir    string
	port       int
	etcdClient int
	stderr     *tailBuffer
	exited     chan struct{}
	waitErr    error
}

// startServer starts `kumod all-in-one` on free loopback ports with its data in dataDir. The
// server's stderr goes to logPath and is kept (its tail) for error messages.
func startServer(bin, dataDir, logPath string) (*server, error) {
	ports, err := freePorts(3)
	if err != nil {
		return nil, err
	}
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("create server log: %w", err)
	}
	s := &server{
		dataDir:    dataDir,
		port:       ports[0],
		etcdClient: ports[1],
		stderr:     &tailBuffer{limit: 64 << 10},
		exited:     make(chan struct{}),
	}
	s.cmd = exec.Command(bin, "all-in-one",
		"--data-dir", dataDir,
		"--port", strconv.Itoa(ports[0]),
		"--etcd-client-port", strconv.Itoa(ports[1]),
		"--etcd-peer-port", strconv.Itoa(ports[2]))
	s.cmd.Stdout = logFile
	s.cmd.Stderr = io.MultiWriter(logFile, s.stderr)
	if err := s.cmd.Start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	slog.Info("kumod started", "pid", s.cmd.Process.Pid, "port", s.port, "etcd", s.etcdURL(), "data", dataDir, "log", logPath)
	go func() {
		s.waitErr = s.cmd.Wait()
		logFile.Close()
		close(s.exited)
	}()
	return s, nil
}

func (s *server) etcdURL() string { return "http://127.0.0.1:" + strconv.Itoa(s.etcdClient) }

func (s *server) kubeconfig() string { return filepath.Join(s.dataDir, "admin.kubeconfig") }

// failure wraps err with the tail of the server's stderr.
func (s *server) failure(err error) error {
	return fmt.Errorf("%w\n--- kumod stderr (tail) ---\n%s\n---", err, s.stderr.tail(40))
}

// waitReady waits until the admin kubeconfig exists and /readyz answers ok, and returns the
// REST configuration from that kubeconfig.
func (s *server) waitReady(ctx context.Context) (*rest.Config, error) {
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	start := time.Now()
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	var lastErr error = errors.New("admin kubeconfig not written yet")
	for {
		select {
		case <-s.exited:
			return nil, s.failure(fmt.Errorf("kumod exited before becoming ready: %v", s.waitErr))
		case <-ctx.Done():
			return nil, s.failure(fmt.Errorf("kumod not ready after %s (last: %v)", readyTimeout, lastErr))
		case <-tick.C:
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
		if err != nil {
			lastErr = fmt.Errorf("GET /readyz: %w", err)
			continue
		}
		if strings.TrimSpace(string(body)) == "ok" {
			slog.Info("kumod ready", "after", time.Since(start).Round(time.Millisecond), "url", cfg.Host)
			return cfg, nil
		}
		lastErr = fmt.Errorf("GET /readyz: %q", body)
	}
}

// stop sends SIGTERM and waits for the server to exit (killing it after 30s).
func (s *server) stop() error {
	select {
	case <-s.exited:
		return s.exitError()
	default:
	}
	if err := s.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		return fmt.Errorf("SIGTERM kumod: %w", err)
	}
	select {
	case <-s.exited:
		return s.exitError()
	case <-time.After(30 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.exited
		return s.failure(errors.New("kumod did not exit within 30s of SIGTERM; killed"))
	}
}

func (s *server) exitError() error {
	if s.waitErr != nil {
		return s.failure(fmt.Errorf("kumod exit: %w", s.waitErr))
	}
	return nil
}
