package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"time"

	"kumo.dev/kumo/bench/internal/kumoserver"
)

const (
	// qmpPoll is the pause between QMP connection attempts of the baseline.
	qmpPoll = 5 * time.Millisecond
	// qmpTimeout bounds the wait for QMP to answer after exec.
	qmpTimeout = 30 * time.Second
)

// template is the command line of a QEMU Kumo started, with pristine copies of the files it
// opens from Kumo's data directory (disk overlay, cloud-init seed, disk key if any).
type template struct {
	argv   []string
	runDir string            // Kumo's run directory, replaced by each run's own
	files  map[string]string // path in Kumo's data directory → pristine copy
}

// blockdevPath finds file names inside -blockdev, -drive and -object values.
var blockdevPath = regexp.MustCompile(`(?:"filename":\s*"|file=)([^",]+)`)

// captureTemplate copies what q opens from dataDir into dir right after q was seen (before the
// guest wrote anything) and keeps q's argv.
func captureTemplate(q *qemuProc, runDir, dataDir, dir string) (*template, error) {
	t := &template{argv: q.argv, runDir: runDir, files: map[string]string{}}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	for i := 1; i < len(q.argv); i++ {
		if prev := q.argv[i-1]; prev != "-blockdev" && prev != "-drive" && prev != "-object" {
			continue
		}
		for _, m := range blockdevPath.FindAllStringSubmatch(q.argv[i], -1) {
			src := m[1]
			if !strings.HasPrefix(src, dataDir+"/") || t.files[src] != "" {
				continue
			}
			dst := filepath.Join(dir, fmt.Sprintf("%d-%s", len(t.files), filepath.Base(src)))
			if err := kumoserver.CopyFile(src, dst); err != nil {
				return nil, fmt.Errorf("copy %s for the baseline: %w", src, err)
			}
			t.files[src] = dst
		}
	}
	if len(t.files) == 0 {
		return nil, fmt.Errorf("no disk of Kumo's data dir in QEMU's command line: %q", q.argv)
	}
	return t, nil
}

// instantiate writes fresh copies of the files into dir and returns the argv pointing at them and
// at dir for sockets and the pid file. Nothing may still point into Kumo's data directory.
func (t *template) instantiate(dir, dataDir string) ([]string, error) {
	var pairs []string
	for src, pristine := range t.files {
		dst := filepath.Join(dir, filepath.Base(src))
		if err := kumoserver.CopyFile(pristine, dst); err != nil {
			return nil, err
		}
		pairs = append(pairs, src, dst)
	}
	pairs = append(pairs, t.runDir, dir)
	r := strings.NewReplacer(pairs...)
	argv := make([]string, len(t.argv))
	for i, a := range t.argv {
		argv[i] = r.Replace(a)
		if strings.Contains(argv[i], dataDir) {
			return nil, fmt.Errorf("baseline argument still names Kumo's data dir: %q", argv[i])
		}
	}
	return argv, nil
}

// baseSample is one direct launch's timings from just before exec.
type baseSample struct {
	exec   time.Duration // exec.Cmd.Start returned (the exec succeeded)
	qmp    time.Duration // QMP accepted a connection, greeted and accepted qmp_capabilities
	marker time.Duration // the guest's marker arrived on the serial socket
}

// runBaseline launches the template's QEMU directly in dir and times it up to the marker.
func runBaseline(ctx context.Context, t *template, dir, dataDir string) (baseSample, error) {
	var s baseSample
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return s, err
	}
	argv, err := t.instantiate(dir, dataDir)
	if err != nil {
		return s, err
	}
	qmpSock, serialSock := sockets(argv)
	if qmpSock == "" || serialSock == "" {
		return s, fmt.Errorf("no QMP or serial socket in %q", argv)
	}
	logf, err := os.Create(filepath.Join(dir, "qemu.log"))
	if err != nil {
		return s, err
	}
	defer logf.Close()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir, cmd.Stdout, cmd.Stderr = dir, logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}

	t0 := time.Now()
	if err := cmd.Start(); err != nil {
		return s, fmt.Errorf("start %s: %w", argv[0], err)
	}
	s.exec = time.Since(t0)
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	defer func() { _ = cmd.Process.Kill(); <-exited }()
	failed := func(err error) (baseSample, error) {
		log, _ := os.ReadFile(logf.Name())
		return s, fmt.Errorf("baseline QEMU: %w; log: %s", err, strings.TrimSpace(string(log)))
	}

	ctx, cancel := context.WithTimeout(ctx, bootTimeout)
	defer cancel()
	deadline := time.Now().Add(qmpTimeout)
	for {
		err := qmpHandshake(qmpSock)
		if err == nil {
			break
		}
		select {
		case <-exited:
			return failed(errors.New("exited before QMP answered"))
		case <-ctx.Done():
			return s, ctx.Err()
		case <-time.After(qmpPoll):
		}
		if time.Now().After(deadline) {
			return failed(fmt.Errorf("QMP did not answer within %s: %w", qmpTimeout, err))
		}
	}
	s.qmp = time.Since(t0)

	conn, err := net.Dial("unix", serialSock)
	if err != nil {
		return failed(fmt.Errorf("connect serial socket: %w", err))
	}
	defer conn.Close()
	go func() { <-ctx.Done(); conn.Close() }()
	if err := readUntil(conn, []byte(marker)); err != nil {
		return failed(fmt.Errorf("no %s on the serial socket: %w (%v)", marker, err, ctx.Err()))
	}
	s.marker = time.Since(t0)
	return s, nil
}

// qmpHandshake connects to QMP, reads the greeting and negotiates capabilities, as Kumo's agent
// does before it calls a QEMU started.
func qmpHandshake(socket string) error {
	conn, err := net.DialTimeout("unix", socket, 2*time.Second)
	if err != nil {
		return err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(2 * time.Second))
	r := bufio.NewReader(conn)
	line, err := r.ReadBytes('\n')
	if err != nil || !bytes.Contains(line, []byte(`"QMP"`)) {
		return fmt.Errorf("QMP greeting %q: %v", line, err)
	}
	if _, err := conn.Write([]byte(`{"execute":"qmp_capabilities"}` + "\n")); err != nil {
		return err
	}
	for {
		line, err := r.ReadBytes('\n')
		if err != nil {
			return fmt.Errorf("qmp_capabilities: %w", err)
		}
		if bytes.Contains(line, []byte(`"return"`)) {
			return nil
		}
		if bytes.Contains(line, []byte(`"error"`)) {
			return fmt.Errorf("qmp_capabilities: %s", line)
		}
	}
}

// sockets returns the QMP and serial socket paths of a Kumo QEMU command line.
func sockets(argv []string) (qmp, serial string) {
	for i := 1; i < len(argv); i++ {
		switch argv[i-1] {
		case "-qmp":
			qmp = strings.TrimPrefix(strings.SplitN(argv[i], ",", 2)[0], "unix:")
		case "-chardev":
			if strings.Contains(argv[i], "id=serial0") {
				for _, kv := range strings.Split(argv[i], ",") {
					if p, ok := strings.CutPrefix(kv, "path="); ok {
						serial = p
					}
				}
			}
		}
	}
	return qmp, serial
}

// readUntil reads r until it has seen needle.
func readUntil(r io.Reader, needle []byte) error {
	buf := make([]byte, 0, 64<<10)
	chunk := make([]byte, 4096)
	for {
		n, err := r.Read(chunk)
		buf = append(buf, chunk[:n]...)
		if bytes.Contains(buf, needle) {
			return nil
		}
		if len(buf) > 32<<10 {
			buf = append(buf[:0], buf[len(buf)-len(needle):]...)
		}
		if err != nil {
			return err
		}
	}
}
