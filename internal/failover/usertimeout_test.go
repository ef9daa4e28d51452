package failover

import (
	"context"
	"net"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"k8s.io/client-go/rest"
)

// A request sent to a server that vanished (partitioned, not closed) must fail in seconds, not
// after the kernel's retransmissions: the connections the failover config makes carry
// TCP_USER_TIMEOUT (keep-alive alone does not cover a connection with unacknowledged data).
func TestConnectionsGiveUpOnUnacknowledgedData(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	servers, err := NewServers([]string{"https://" + l.Addr().String()})
	if err != nil {
		t.Fatal(err)
	}
	cfg := &rest.Config{}
	Configure(cfg, servers)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := cfg.Dial(ctx, "tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	raw, err := c.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var got int
	var gerr error
	if err := raw.Control(func(fd uintptr) {
		got, gerr = unix.GetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT)
	}); err != nil || gerr != nil {
		t.Fatal(err, gerr)
	}
	if want := int(UserTimeout / time.Millisecond); got != want {
		t.Errorf("TCP_USER_TIMEOUT %d ms, want %d ms", got, want)
	}
}
