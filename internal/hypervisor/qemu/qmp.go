package qemu

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"
)

// eventBuffer is how many QMP events wait for a reader before new ones are dropped (and logged).
const eventBuffer = 64

// DefaultCommandTimeout bounds a QMP command whose context carries no deadline of its own: a
// frozen QEMU (SIGSTOP, a stuck main loop) must never hold a caller forever.
const DefaultCommandTimeout = 10 * time.Second

// commandTimeout is DefaultCommandTimeout; tests shorten it.
var commandTimeout = DefaultCommandTimeout

// ErrMonitorClosed is returned by Execute once the QMP connection is gone.
var ErrMonitorClosed = errors.New("qmp monitor closed")

// Event is an asynchronous QMP event such as SHUTDOWN, RESET, STOP, RESUME or GUEST_PANICKED.
type Event struct {
	Name string
	Data map[string]any
	Time time.Time
}

// QMPError is an error reply from QEMU.
type QMPError struct {
	Class string
	Desc  string
}

func (e *QMPError) Error() string { return fmt.Sprintf("qmp error %s: %s", e.Class, e.Desc) }

// Monitor is a thin QMP client over a unix socket: one command in flight at a time, replies matched
// by id, events delivered on a channel.
type Monitor struct {
	conn   net.Conn
	socket string
	log    *slog.Logger

	// cmdLock serialises Execute (one command in flight). It is a channel rather than a mutex so
	// that a caller waiting behind a command to a frozen QEMU gives up when its context ends.
	cmdLock chan struct{}
	nextID  uint64

	mu      sync.Mutex
	pending map[string]chan qmpMessage
	closed  bool
	err     error // why the reader stopped

	events chan Event
	done   chan struct{}
}

// qmpMessage is any message QEMU sends: greeting, reply or event.
type qmpMessage struct {
	QMP       json.RawMessage `json:"QMP,omitempty"`
	ID        string          `json:"id,omitempty"`
	Return    json.RawMessage `json:"return,omitempty"`
	Error     *qmpErrorBody   `json:"error,omitempty"`
	Event     string          `json:"event,omitempty"`
	Data      map[string]any  `json:"data,omitempty"`
	Timestamp *struct {
		Seconds      int64 `json:"seconds"`
		Microseconds int64 `json:"microseconds"`
	} `json:"timestamp,omitempty"`
}

type qmpErrorBody struct {
	Class string `json:"class"`
	Desc  string `json:"desc"`
}

type qmpCommand struct {
	Execute   string `json:"execute"`
	Arguments any    `json:"arguments,omitempty"`
	ID        string `json:"id"`
}

// DialMonitor connects to a QMP socket, reads the greeting and negotiates capabilities. ctx bounds
// the whole handshake.
func DialMonitor(ctx context.Context, socket string) (*Monitor, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", socket)
	if err != nil {
		return nil, fmt.Errorf("connect to qmp socket %s: %w", socket, err)
	}
	m := &Monitor{
		conn:    conn,
		socket:  socket,
		log:     slog.Default().With("qmp", socket),
		cmdLock: make(chan struct{}, 1),
		pending: map[string]chan qmpMessage{},
		events:  make(chan Event, eventBuffer),
		done:    make(chan struct{}),
	}
	dec := json.NewDecoder(conn)

	// The greeting is read before the reader goroutine starts. ctx bounds it: a QEMU that accepted
	// the connection but still serves another client stays silent.
	if dl, ok := ctx.Deadline(); ok {
		conn.SetReadDeadline(dl)
	}
	interrupt := context.AfterFunc(ctx, func() { conn.SetReadDeadline(time.Unix(1, 0)) })
	var greeting qmpMessage
	err = dec.Decode(&greeting)
	if !interrupt() || err != nil {
		conn.Close()
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		return nil, fmt.Errorf("read qmp greeting from %s: %w", socket, err)
	}
	if greeting.QMP == nil {
		conn.Close()
		return nil, fmt.Errorf("read qmp greeting from %s: unexpected first message", socket)
	}
	conn.SetReadDeadline(time.Time{})

	go m.readLoop(dec)
	if err := m.Execute(ctx, "qmp_capabilities", nil, nil); err != nil {
		m.Close()
		return nil, fmt.Errorf("negotiate qmp capabilities on %s: %w", socket, err)
	}
	return m, nil
}

// Execute runs one QMP command. args (a struct or map) becomes "arguments"; the reply's "return"
// is decoded into result when it is not nil. QEMU's error replies come back as *QMPError. The
// command, including the wait for an earlier command still in flight, ends with ctx, and within
// DefaultCommandTimeout when ctx has no deadline.
func (m *Monitor) Execute(ctx context.Context, command string, args any, result any) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, commandTimeout)
		defer cancel()
	}
	select {
	case m.cmdLock <- struct{}{}:
		defer func() { <-m.cmdLock }()
	case <-ctx.Done():
		return fmt.Errorf("qmp %s: waiting for the command in flight on %s: %w", command, m.socket, ctx.Err())
	case <-m.done:
		return fmt.Errorf("qmp %s: %w", command, m.closeErr())
	}

	m.mu.Lock()
	if m.closed {
		err := m.err
		m.mu.Unlock()
		return fmt.Errorf("qmp %s: %w", command, err)
	}
	m.nextID++
	id := fmt.Sprintf("kumo-%d", m.nextID)
	reply := make(chan qmpMessage, 1)
	m.pending[id] = reply
	m.mu.Unlock()
	defer func() {
		m.mu.Lock()
		delete(m.pending, id)
		m.mu.Unlock()
	}()

	b, err := json.Marshal(qmpCommand{Execute: command, Arguments: args, ID: id})
	if err != nil {
		return fmt.Errorf("qmp %s: encode arguments: %w", command, err)
	}
	dl, _ := ctx.Deadline()
	m.conn.SetWriteDeadline(dl)
	defer m.conn.SetWriteDeadline(time.Time{})
	if _, err := m.conn.Write(append(b, '\n')); err != nil {
		return fmt.Errorf("qmp %s: send: %w", command, err)
	}

	select {
	case msg := <-reply:
		return decodeReply(command, msg, result)
	case <-m.done:
		select {
		case msg := <-reply: // the reply raced the end of the connection
			return decodeReply(command, msg, result)
		default:
		}
		return fmt.Errorf("qmp %s: %w", command, m.closeErr())
	case <-ctx.Done():
		// A late reply is dropped by the reader: its id is no longer pending.
		return fmt.Errorf("qmp %s: %w", command, ctx.Err())
	}
}

func decodeReply(command string, msg qmpMessage, result any) error {
	if msg.Error != nil {
		return fmt.Errorf("qmp %s: %w", command, &QMPError{Class: msg.Error.Class, Desc: msg.Error.Desc})
	}
	if result != nil && msg.Return != nil {
		if err := json.Unmarshal(msg.Return, result); err != nil {
			return fmt.Errorf("qmp %s: decode reply: %w", command, err)
		}
	}
	return nil
}

// Events delivers QMP events until the monitor closes, then is closed. Events arriving while the
// buffer is full are dropped.
func (m *Monitor) Events() <-chan Event { return m.events }

// Done is closed when the connection is gone (Close, or QEMU went away).
func (m *Monitor) Done() <-chan struct{} { return m.done }

// Close closes the connection; QEMU keeps running.
func (m *Monitor) Close() error {
	m.mu.Lock()
	already := m.closed
	m.closed = true
	if m.err == nil {
		m.err = ErrMonitorClosed
	}
	m.mu.Unlock()
	if already {
		return nil
	}
	if err := m.conn.Close(); err != nil {
		return fmt.Errorf("close qmp connection %s: %w", m.socket, err)
	}
	return nil
}

func (m *Monitor) closeErr() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.err == nil {
		return ErrMonitorClosed
	}
	return m.err
}

// readLoop dispatches replies to waiting commands and events to the channel until the
// connection ends.
func (m *Monitor) readLoop(dec *json.Decoder) {
	var readErr error
	for {
		var msg qmpMessage
		if err := dec.Decode(&msg); err != nil {
			readErr = err
			break
		}
		switch {
		case msg.Event != "":
			m.deliver(msg)
		case msg.ID != "":
			m.mu.Lock()
			ch := m.pending[msg.ID]
			m.mu.Unlock()
			if ch != nil {
				ch <- msg
			}
		}
	}
	m.mu.Lock()
	if !m.closed {
		m.closed = true
		m.err = fmt.Errorf("%w: %v", ErrMonitorClosed, readErr)
	}
	m.mu.Unlock()
	m.conn.Close()
	close(m.done)
	close(m.events)
}

func (m *Monitor) deliver(msg qmpMessage) {
	ev := Event{Name: msg.Event, Data: msg.Data, Time: time.Now()}
	if ts := msg.Timestamp; ts != nil {
		ev.Time = time.Unix(ts.Seconds, ts.Microseconds*int64(time.Microsecond))
	}
	select {
	case m.events <- ev:
	default:
		m.log.Warn("qmp event dropped: buffer full", "event", ev.Name)
	}
}
