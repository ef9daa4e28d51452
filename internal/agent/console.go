package agent

import (
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"time"
)

const (
	// serialLogMax bounds the serial log kept per incarnation; when it grows past this, the older
	// half is dropped.
	serialLogMax = 1 << 20
	// serialDialTimeout bounds waiting for QEMU's serial socket.
	serialDialTimeout = 10 * time.Second
)

// console is the agent's single connection to a VM's serial socket (QEMU serves one client): it
// keeps a bounded log of everything the guest printed and fans output out to attached sessions,
// whose input goes to the guest.
type console struct {
	conn    net.Conn
	logPath string

	mu   sync.Mutex
	log  *os.File
	size int64
	subs map[chan []byte]struct{}
	done chan struct{}
}

func openConsole(socket, logPath string) (*console, error) {
	var conn net.Conn
	var err error
	deadline := time.Now().Add(serialDialTimeout)
	for {
		if conn, err = net.Dial("unix", socket); err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil {
		return nil, fmt.Errorf("connect serial console %s: %w", socket, err)
	}
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		conn.Close()
		return nil, err
	}
	st, _ := f.Stat()
	c := &console{conn: conn, logPath: logPath, log: f, size: st.Size(), subs: map[chan []byte]struct{}{}, done: make(chan struct{})}
	go c.pump()
	return c, nil
}

func (c *console) pump() {
	defer close(c.done)
	buf := make([]byte, 4096)
	for {
		n, err := c.conn.Read(buf)
		if n > 0 {
			chunk := append([]byte(nil), buf[:n]...)
			c.mu.Lock()
			c.appendLog(chunk)
			for ch := range c.subs {
				select {
				case ch <- chunk:
				default: // a session that does not keep up loses output, never stalls the guest
				}
			}
			c.mu.Unlock()
		}
		if err != nil {
			c.mu.Lock()
			for ch := range c.subs {
				close(ch)
			}
			c.subs = map[chan []byte]struct{}{}
			c.mu.Unlock()
			return
		}
	}
}

// appendLog writes to the log, keeping it under serialLogMax. Called with mu held.
func (c *console) appendLog(p []byte) {
	if _, err := c.log.Write(p); err == nil {
		c.size += int64(len(p))
	}
	if c.size <= serialLogMax {
		return
	}
	data, err := os.ReadFile(c.logPath)
	if err != nil {
		return
	}
	keep := data[len(data)-serialLogMax/2:]
	if err := os.WriteFile(c.logPath, keep, 0o600); err != nil {
		return
	}
	c.log.Close()
	if f, err := os.OpenFile(c.logPath, os.O_WRONLY|os.O_APPEND, 0o600); err == nil {
		c.log, c.size = f, int64(len(keep))
	}
}

// attach subscribes to the output; detach with the returned func.
func (c *console) attach() (<-chan []byte, func()) {
	ch := make(chan []byte, 256)
	c.mu.Lock()
	select {
	case <-c.done:
		close(ch)
	default:
		c.subs[ch] = struct{}{}
	}
	c.mu.Unlock()
	return ch, func() {
		c.mu.Lock()
		if _, ok := c.subs[ch]; ok {
			delete(c.subs, ch)
			close(ch)
		}
		c.mu.Unlock()
	}
}

// Write sends input to the guest.
func (c *console) Write(p []byte) (int, error) { return c.conn.Write(p) }

func (c *console) close() {
	c.conn.Close()
	<-c.done
	c.mu.Lock()
	c.log.Close()
	c.mu.Unlock()
}

var _ io.Writer = &console{}
