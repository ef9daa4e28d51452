// Package kumoserver starts a kumod all-in-one for the benchmarks on free loopback ports and stops it.
package kumoserver

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
	"path"
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

// ErrNoModule is returned by ModuleRoot and Build outside the kumo module.
var ErrNoModule = errors.New("not inside the kumo module: run from the repository")

// ModuleRoot is the directory of the kumo module the current directory belongs to.
func ModuleRoot(ctx context.Context) (string, error) {
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", ErrNoModule
	}
	return filepath.Dir(gomod), nil
}

// Build builds the main packages pkgs (such as "./cmd/kumod") of the module root into outDir
// and returns each binary's path by its name (the last element of its package path).
func Build(ctx context.Context, outDir string, pkgs ...string) (map[string]string, error) {
	root, err := ModuleRoot(ctx)
	if err != nil {
		return nil, err
	}
	slog.Info("building", "pkgs", pkgs, "out", outDir)
	start := time.Now()
	args := append([]string{"build", "-o", outDir + string(filepath.Separator)}, pkgs...)
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("go build %s: %w\n%s", strings.Join(pkgs, " "), err, out)
	}
	slog.Info("built", "took", time.Since(start).Round(time.Millisecond))
	bins := make(map[string]string, len(pkgs))
	for _, p := range pkgs {
		name := path.Base(p)
		bins[name] = filepath.Join(outDir, name)
	}
	return bins, nil
}

// Server is a `kumod all-in-one` subprocess.
type Server struct {
	DataDir                            string
	Port, EtcdClientPort, EtcdPeerPort int

	cmd     *exec.Cmd
	stderr  *tailBuffer
	exited  chan struct{}
	waitErr error
}

// Start starts `kumod all-in-one` (bin) on free loopback ports with its data in dataDir and
// extraArgs after the port flags. The server's output goes to logPath; the tail of its stderr is
// kept for error messages.
func Start(bin, dataDir, logPath string, extraArgs ...string) (*Server, error) {
	ports, err := FreePorts(3)
	if err != nil {
		return nil, err
	}
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("create server log: %w", err)
	}
	s := &Server{
		DataDir:        dataDir,
		Port:           ports[0],
		EtcdClientPort: ports[1],
		EtcdPeerPort:   ports[2],
		stderr:         &tailBuffer{limit: 64 << 10},
		exited:         make(chan struct{}),
	}
	args := append([]string{"all-in-one",
		"--data-dir", dataDir,
		"--port", strconv.Itoa(s.Port),
		"--etcd-client-port", strconv.Itoa(s.EtcdClientPort),
		"--etcd-peer-port", strconv.Itoa(s.EtcdPeerPort)}, extraArgs...)
	s.cmd = exec.Command(bin, args...)
	s.cmd.Stdout = logFile
	s.cmd.Stderr = io.MultiWriter(logFile, s.stderr)
	if err := s.cmd.Start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	slog.Info("kumod started", "pid", s.Pid(), "port", s.Port, "etcd", s.EtcdURL(), "data", dataDir, "log", logPath)
	go func() {
		s.waitErr = s.cmd.Wait()
		logFile.Close()
		close(s.exited)
	}()
	return s, nil
}

// Pid is the server's process ID.
func (s *Server) Pid() int { return s.cmd.Process.Pid }

// EtcdURL is the client URL of the server's embedded etcd.
func (s *Server) EtcdURL() string { return "http://127.0.0.1:" + strconv.Itoa(s.EtcdClientPort) }

// Kubeconfig is the path of the administrator's kubeconfig the server writes.
func (s *Server) Kubeconfig() string { return filepath.Join(s.DataDir, "admin.kubeconfig") }

// Failure wraps err with the tail of the server's stderr.
func (s *Server) Failure(err error) error {
	return fmt.Errorf("%w\n--- kumod stderr (tail) ---\n%s\n---", err, s.stderr.tail(40))
}

// Annotate adds the server's stderr tail to err when the server has died.
func (s *Server) Annotate(err error) error {
	select {
	case <-s.exited:
		return s.Failure(errors.Join(err, fmt.Errorf("kumod exited: %v", s.waitErr)))
	default:
		return err
	}
}

// WaitReady waits until the admin kubeconfig exists and /readyz answers ok, and returns the
// REST configuration from that kubeconfig.
func (s *Server) WaitReady(ctx context.Context) (*rest.Config, error) {
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	start := time.Now()
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	var lastErr error = errors.New("admin kubeconfig not written yet")
	for {
		select {
		case <-s.exited:
			return nil, s.Failure(fmt.Errorf("kumod exited before becoming ready: %v", s.waitErr))
		case <-ctx.Done():
			return nil, s.Failure(fmt.Errorf("kumod not ready after %s (last: %v)", readyTimeout, lastErr))
		case <-tick.C:
		}
		if _, err := os.Stat(s.Kubeconfig()); err != nil {
			continue
		}
		cfg, err := clientcmd.BuildConfigFromFlags("", s.Kubeconfig())
		if err != nil {
			lastErr = fmt.Errorf("load %s: %w", s.Kubeconfig(), err)
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

// Stop sends SIGTERM and waits for the server to exit (killing it after 30s). It reports a
// failed exit, also when the server had exited before. It does not kill processes the server
// left behind (the agent's QEMUs).
func (s *Server) Stop() error {
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
		return s.Failure(errors.New("kumod did not exit within 30s of SIGTERM; killed"))
	}
}

func (s *Server) exitError() error {
	if s.waitErr != nil {
		return s.Failure(fmt.Errorf("kumod exit: %w", s.waitErr))
	}
	return nil
}

// FreePorts returns n distinct free loopback TCP ports: it listens on 127.0.0.1:0 for each
// (keeping all open until all are chosen, so none repeats) and then closes them.
func FreePorts(n int) ([]int, error) {
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

// Percentile takes the nearest-rank percentile p of sorted durations.
func Percentile(sorted []time.Duration, p float64) time.Duration {
	rank := int(p/100*float64(len(sorted))+0.5) - 1
	rank = max(0, min(rank, len(sorted)-1))
	return sorted[rank]
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
