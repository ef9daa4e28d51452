package e2e

import (
	"bufio"
	"context"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	kumo "kumo.dev/kumo/pkg/apis/kumo/v1alpha1"
)

// tcpConns counts the established TCP connections of process pid whose remote (or, with
// local, local) port is port, from /proc/net/tcp{,6} and the process's socket descriptors.
func tcpConns(t *testing.T, pid, port int, local bool) int {
	t.Helper()
	inodes := map[string]bool{}
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, fd := range fds {
		if l, err := os.Readlink(filepath.Join(fmt.Sprintf("/proc/%d/fd", pid), fd.Name())); err == nil && strings.HasPrefix(l, "socket:[") {
			inodes[strings.TrimSuffix(strings.TrimPrefix(l, "socket:["), "]")] = true
		}
	}
	n := 0
	for _, table := range []string{"tcp", "tcp6"} {
		f, err := os.Open(fmt.Sprintf("/proc/%d/net/%s", pid, table))
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(f)
		sc.Scan() // header
		for sc.Scan() {
			fields := strings.Fields(sc.Text())
			if len(fields) < 10 || fields[3] != "01" || !inodes[fields[9]] { // 01: ESTABLISHED
				continue
			}
			addr := fields[2]
			if local {
				addr = fields[1]
			}
			p, _ := strconv.ParseInt(addr[strings.LastIndexByte(addr, ':')+1:], 16, 32)
			if int(p) == port {
				n++
			}
		}
		f.Close()
	}
	return n
}

// TestSerialLogsAndConsolesLeakNoConnections: every kumo console --show-log is proxied by the server
// to the agent; the server reuses its connection to the agent instead of leaving one open per
// request (measured on kumod's own sockets: the all-in-one holds both ends).
func TestSerialLogsAndConsolesLeakNoConnections(t *testing.T) {
	c := startAllInOne(t)
	kc := c.NewTenant(t, "logs")
	cl := c.Client(t, kc)
	ns := kumo.TenantNamespace("logs")
	if r := Run(kc, tinyVM("vm1", "sys1", ""), bins.kumo, "apply", "-f", "-"); r.Err != nil {
		t.Fatal(r)
	}
	waitVM(t, cl, ns, "vm1", "Running", bootTimeout, running)
	node := &kumo.Node{}
	if err := c.Admin(t).Kumo.Get().Resource("nodes").Name("aio").Do(context.Background()).Into(node); err != nil {
		t.Fatal(err)
	}
	u, err := url.Parse(node.Status.AgentEndpoint)
	if err != nil {
		t.Fatal(err)
	}
	agentPort, _ := strconv.Atoi(u.Port())
	pid := c.cmd.Process.Pid

	showLog := func() {
		t.Helper()
		if r := c.Kumo(kc, "console", "vm1", "--show-log"); r.Err != nil {
			t.Fatal(r)
		}
	}
	showLog() // the first request may open the server's pooled connection
	before, agentBefore := tcpConns(t, pid, agentPort, false), tcpConns(t, pid, agentPort, true)
	const n = 10
	for i := 0; i < n; i++ {
		showLog()
	}
	// A connection the server dropped needs a moment to leave ESTABLISHED on the agent's side.
	var after, agentAfter int
	deadline := time.Now().Add(10 * time.Second)
	for {
		after, agentAfter = tcpConns(t, pid, agentPort, false), tcpConns(t, pid, agentPort, true)
		if after <= before+1 || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Logf("server→agent connections: %d before, %d after %d serial-log requests (agent side: %d, %d)", before, after, n, agentBefore, agentAfter)
	if after > before+1 {
		t.Errorf("%d serial-log requests left %d more server→agent connections open", n, after-before)
	}
	if agentAfter > agentBefore+1 {
		t.Errorf("%d serial-log requests left %d more connections open on the agent", n, agentAfter-agentBefore)
	}

	// Attached consoles (WebSockets) close on both sides when the client leaves.
	for i := 0; i < 3; i++ {
		if r := Run(kc, "", bins.kumo, "console", "vm1", "--linger", "100ms"); r.Err != nil {
			t.Fatal(r)
		}
	}
	eventually(t, 20*time.Second, "the consoles' connections to the agent closed", func() bool {
		after, agentAfter = tcpConns(t, pid, agentPort, false), tcpConns(t, pid, agentPort, true)
		return after <= before+1 && agentAfter <= agentBefore+1
	})
	t.Logf("after 3 consoles: %d server→agent, %d agent-side connections", after, agentAfter)
}
