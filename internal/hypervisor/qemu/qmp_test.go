package qemu

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// fakeQMP is a scripted QMP server: handle gets each command and writes whatever it likes.
type fakeQMP struct {
	socket string
	ln     net.Listener
}

type fakeCommand struct {
	Execute   string          `json:"execute"`
	Arguments json.RawMessage `json:"arguments"`
	ID        string          `json:"id"`
}

func newFakeQMP(t *testing.T, handle func(w *bufio.Writer, cmd fakeCommand)) *fakeQMP {
	t.Helper()
	dir, err := os.MkdirTemp("", "kq-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	socket := filepath.Join(dir, "qmp.sock")
	ln, err := net.Listen("unix", socket)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			return
		}
		defer conn.Close()
		w := bufio.NewWriter(conn)
		fmt.Fprintln(w, `{"QMP": {"version": {"qemu": {"micro": 22, "minor": 2, "major": 7}}, "capabilities": ["oob"]}}`)
		w.Flush()
		dec := json.NewDecoder(conn)
		for {
			var cmd fakeCommand
			if err := dec.Decode(&cmd); err != nil {
				return
			}
			if cmd.Execute == "qmp_capabilities" {
				fmt.Fprintf(w, `{"return": {}, "id": %q}`+"\n", cmd.ID)
			} else if cmd.Execute == "hangup" {
				return
			} else {
				handle(w, cmd)
			}
			w.Flush()
		}
	}()
	return &fakeQMP{socket: socket, ln: ln}
}

func dialFake(t *testing.T, f *fakeQMP) *Monitor {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	m, err := DialMonitor(ctx, f.socket)
	if err != nil {
		t.Fatalf("DialMonitor: %v", err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

func TestMonitorDecodesTypedResultsAndSendsArguments(t *testing.T) {
	f := newFakeQMP(t, func(w *bufio.Writer, cmd fakeCommand) {
		switch cmd.Execute {
		case "query-status":
			fmt.Fprintf(w, `{"return": {"status": "running", "running": true}, "id": %q}`+"\n", cmd.ID)
		case "echo":
			fmt.Fprintf(w, `{"return": %s, "id": %q}`+"\n", cmd.Arguments, cmd.ID)
		}
	})
	m := dialFake(t, f)
	ctx := context.Background()

	var st struct {
		Status  string `json:"status"`
		Running bool   `json:"running"`
	}
	if err := m.Execute(ctx, "query-status", nil, &st); err != nil {
		t.Fatal(err)
	}
	if st.Status != "running" || !st.Running {
		t.Fatalf("query-status = %+v", st)
	}
	type resize struct {
		NodeName string `json:"node-name"`
		Size     int64  `json:"size"`
	}
	var back resize
	if err := m.Execute(ctx, "echo", resize{"drive-root", 1 << 30}, &back); err != nil {
		t.Fatal(err)
	}
	if back != (resize{"drive-root", 1 << 30}) {
		t.Fatalf("arguments arrived as %+v", back)
	}
}

func TestMonitorReturnsQMPError(t *testing.T) {
	f := newFakeQMP(t, func(w *bufio.Writer, cmd fakeCommand) {
		fmt.Fprintf(w, `{"error": {"class": "CommandNotFound", "desc": "The command %s has not been found"}, "id": %q}`+"\n", cmd.Execute, cmd.ID)
	})
	m := dialFake(t, f)
	err := m.Execute(context.Background(), "nope", nil, nil)
	var qe *QMPError
	if !errors.As(err, &qe) || qe.Class != "CommandNotFound" || qe.Desc != "The command nope has not been found" {
		t.Fatalf("Execute = %v, want *QMPError CommandNotFound", err)
	}
}

// TestMonitorMatchesRepliesByID: a reply with an unknown id (e.g. to a command whose caller gave up)
// must not be taken for the current command's reply; events between are delivered.
func TestMonitorMatchesRepliesByID(t *testing.T) {
	f := newFakeQMP(t, func(w *bufio.Writer, cmd fakeCommand) {
		switch cmd.Execute {
		case "slow":
			// never answered in time; the caller gives up
		case "next":
			fmt.Fprintln(w, `{"return": {"which": "stale"}, "id": "kumo-999"}`)
			fmt.Fprintln(w, `{"event": "STOP", "data": {}, "timestamp": {"seconds": 1700000000, "microseconds": 5}}`)
			fmt.Fprintf(w, `{"return": {"which": "right"}, "id": %q}`+"\n", cmd.ID)
		}
	})
	m := dialFake(t, f)

	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	err := m.Execute(ctx, "slow", nil, nil)
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("slow command: %v, want deadline exceeded", err)
	}

	var got struct{ Which string }
	if err := m.Execute(context.Background(), "next", nil, &got); err != nil {
		t.Fatal(err)
	}
	if got.Which != "right" {
		t.Fatalf("took the %q reply", got.Which)
	}
	select {
	case ev := <-m.Events():
		if ev.Name != "STOP" || ev.Time.Unix() != 1700000000 {
			t.Fatalf("event = %+v", ev)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("no STOP event")
	}
}

func TestMonitorFailsCommandsAndClosesEventsWhenQEMUGoesAway(t *testing.T) {
	f := newFakeQMP(t, func(w *bufio.Writer, cmd fakeCommand) {})
	m := dialFake(t, f)
	err := m.Execute(context.Background(), "hangup", nil, nil)
	if !errors.Is(err, ErrMonitorClosed) {
		t.Fatalf("Execute on a closed connection = %v, want ErrMonitorClosed", err)
	}
	select {
	case _, ok := <-m.Events():
		if ok {
			t.Fatal("unexpected event")
		}
	case <-time.After(2 * time.Second):
		t.Fatal("Events not closed")
	}
	if err := m.Execute(context.Background(), "query-status", nil, nil); !errors.Is(err, ErrMonitorClosed) {
		t.Fatalf("Execute after close = %v, want ErrMonitorClosed", err)
	}
}

func TestDialMonitorGivesUpWithoutGreeting(t *testing.T) {
	for _, tc := range []struct {
		name string
		ctx  func() (context.Context, context.CancelFunc)
	}{
		{"deadline", func() (context.Context, context.CancelFunc) {
			return context.WithTimeout(context.Background(), 200*time.Millisecond)
		}},
		{"cancel", func() (context.Context, context.CancelFunc) {
			ctx, cancel := context.WithCancel(context.Background())
			time.AfterFunc(200*time.Millisecond, cancel)
			return ctx, cancel
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir, err := os.MkdirTemp("", "kq-")
			if err != nil {
				t.Fatal(err)
			}
			defer os.RemoveAll(dir)
			ln, err := net.Listen("unix", filepath.Join(dir, "qmp.sock"))
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			go func() { // accept but stay silent, like a QEMU busy with another client
				c, err := ln.Accept()
				if err == nil {
					defer c.Close()
					time.Sleep(5 * time.Second)
				}
			}()
			ctx, cancel := tc.ctx()
			defer cancel()
			began := time.Now()
			if _, err := DialMonitor(ctx, filepath.Join(dir, "qmp.sock")); err == nil {
				t.Fatal("DialMonitor succeeded without a greeting")
			}
			if d := time.Since(began); d > 2*time.Second {
				t.Fatalf("DialMonitor took %s despite a 200ms context", d)
			}
		})
	}
}

// TestMonitorCallsToASilentQEMUEndAndDoNotBlockWaiters: a QEMU that never answers (SIGSTOP, a stuck
// main loop) must neither hold a command without a deadline forever nor hold the callers queued
// behind it past their own contexts.
func TestMonitorCallsToASilentQEMUEndAndDoNotBlockWaiters(t *testing.T) {
	arrived := make(chan string, 4)
	f := newFakeQMP(t, func(w *bufio.Writer, cmd fakeCommand) { arrived <- cmd.Execute }) // never answers
	m := dialFake(t, f)

	defer func(d time.Duration) { commandTimeout = d }(commandTimeout)
	commandTimeout = 300 * time.Millisecond
	if err := m.Execute(context.Background(), "query-status", nil, nil); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("command without a deadline to a silent QEMU = %v, want the default deadline", err)
	}
	<-arrived

	// A first caller waits for its reply; a second one queues behind it and gives up with its ctx.
	firstCtx, cancelFirst := context.WithTimeout(context.Background(), time.Minute)
	defer cancelFirst()
	first := make(chan error, 1)
	go func() { first <- m.Execute(firstCtx, "query-status", nil, nil) }()
	select {
	case <-arrived:
	case <-time.After(10 * time.Second):
		t.Fatal("the first command never reached the monitor")
	}
	secondCtx, cancelSecond := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancelSecond()
	err := m.Execute(secondCtx, "query-status", nil, nil)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("queued command = %v, want its context's deadline", err)
	}
	select {
	case err := <-first:
		t.Fatalf("the first command ended (%v) before the queued one gave up: the lock ignored the queued caller's context", err)
	default:
	}
	cancelFirst()
	if err := <-first; !errors.Is(err, context.Canceled) {
		t.Fatalf("first command = %v, want canceled", err)
	}
}
