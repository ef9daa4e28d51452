package controlplane

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"
	watchtools "k8s.io/client-go/tools/watch"

	kumo "kumo.dev/kumo/pkg/apis/kumo/v1alpha1"
	"kumo.dev/kumo/pkg/client"
)

// direct is a client of server s alone (no failover).
func direct(t *testing.T, s *Server) *client.Client {
	t.Helper()
	cfg, err := clientcmd.BuildConfigFromFlags("", s.Kubeconfig())
	if err != nil {
		t.Fatal(err)
	}
	cfg.Timeout = 10 * time.Second
	c, err := client.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestThreeServersFormOneClusterWithOneLeader(t *testing.T) {
	c := needCluster(t)
	ctx := context.Background()
	holders := map[string]bool{}
	for _, s := range c.Servers {
		h, err := leader(ctx, direct(t, s))
		if err != nil {
			t.Fatalf("server %s: read the leader lease: %v", s.Name, err)
		}
		holders[h] = true
	}
	if len(holders) != 1 {
		t.Fatalf("the servers see leaders %v, want exactly one", holders)
	}
	var holder string
	for h := range holders {
		holder = h
	}
	if c.Server(holder) == nil {
		t.Fatalf("leader %q is none of the servers", holder)
	}
	leading := 0
	for _, s := range c.Servers {
		if strings.Contains(s.Log(), "leading: starting controllers") {
			leading++
		}
	}
	if leading != 1 {
		t.Fatalf("%d servers started controllers, want 1", leading)
	}
	out, err := exec.Command(bins.kumo, "--kubeconfig", c.Servers[0].Kubeconfig(), "get", "leases", "-n", "kumo-system").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "kumo-controllers") || !strings.Contains(string(out), holder) {
		t.Fatalf("kumo get leases -n kumo-system: %v\n%s", err, out)
	}
	if n := len(etcdMembers(t, c)); n != 3 {
		t.Fatalf("etcd has %d members, want 3", n)
	}
}

func TestLeaderKillFailsOverKeepsObjectsAndNodeStaysReady(t *testing.T) {
	c := needCluster(t)
	ctx := context.Background()
	old, err := leader(ctx, admin(t, c.Servers[0]))
	if err != nil {
		t.Fatal(err)
	}
	victim := c.Server(old)
	var survivor *Server
	for _, s := range c.Servers {
		if s != victim {
			survivor = s
			break
		}
	}
	// The agent's first server is the leader, so the kill takes its connection away.
	agent := startAgent(t, c, "cp-n1", victim)
	ac := admin(t, survivor)
	eventually(t, 60*time.Second, "node cp-n1 heartbeats", func() bool {
		n, err := getNode(ctx, ac, "cp-n1")
		return err == nil && !n.Status.LastHeartbeatTime.IsZero()
	})
	created := createLeases(t, ac, "before", 5)

	victim.Kill()
	killed := time.Now()
	var took time.Duration
	eventually(t, 30*time.Second, "a new leader", func() bool {
		h, err := leader(ctx, ac)
		if err == nil && h != "" && h != old {
			took = time.Since(killed)
			return true
		}
		return false
	})
	t.Logf("leader %s killed; a new leader took over after %s (lease 3s, renew 2s, retry 500ms)", old, took.Round(10*time.Millisecond))
	if took > 15*time.Second {
		t.Fatalf("failover took %s, want a few seconds", took)
	}
	for _, name := range created {
		if _, err := ac.Core.CoordinationV1().Leases("kumo-system").Get(ctx, name, metav1.GetOptions{}); err != nil {
			t.Fatalf("lease %s created before the kill: %v", name, err)
		}
	}
	// The node keeps heartbeating through another server, and stays Ready.
	eventually(t, 20*time.Second, "a heartbeat of cp-n1 after the kill", func() bool {
		n, err := getNode(ctx, ac, "cp-n1")
		return err == nil && n.Status.LastHeartbeatTime.Time.After(killed.Add(time.Second)) && nodeReady(n)
	})
	if !strings.Contains(agent.log.String(), "moving to the next one") {
		t.Errorf("the agent did not log its move to another server:\n%s", agent.log.String())
	}

	if err := victim.Restart(); err != nil {
		t.Fatal(err)
	}
	eventually(t, 60*time.Second, "three healthy etcd members", func() bool { return healthyMembers(t, c) == 3 })
	if _, err := direct(t, victim).Core.CoordinationV1().Leases("kumo-system").Get(ctx, created[0], metav1.GetOptions{}); err != nil {
		t.Fatalf("the restarted server does not serve lease %s: %v", created[0], err)
	}
}

func TestWatchCrossesServerKillWithoutMissingEvents(t *testing.T) {
	c := needCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	victim, other := c.Servers[1], c.Servers[2]
	wc := admin(t, victim) // the victim first: the watch runs through it
	leases := wc.Core.CoordinationV1().Leases("kumo-system")
	const label = "kumo.dev/test=watch"
	list, err := leases.List(ctx, metav1.ListOptions{LabelSelector: label})
	if err != nil {
		t.Fatal(err)
	}
	w, err := watchtools.NewRetryWatcherWithContext(ctx, list.ResourceVersion, &cache.ListWatch{
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			o.LabelSelector = label
			return leases.Watch(ctx, o)
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()

	victim.Kill()
	// Objects created while the watch's server is gone, through another server.
	oc := direct(t, other)
	var names []string
	for i := 0; i < 10; i++ {
		name := fmt.Sprintf("watch-%d", i)
		l := &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"kumo.dev/test": "watch"}}}
		if _, err := oc.Core.CoordinationV1().Leases("kumo-system").Create(ctx, l, metav1.CreateOptions{}); err != nil {
			t.Fatalf("create %s during the outage: %v", name, err)
		}
		names = append(names, name)
		time.Sleep(100 * time.Millisecond)
	}
	var got []string
	timeout := time.After(60 * time.Second)
	for len(got) < len(names) {
		select {
		case ev, ok := <-w.ResultChan():
			if !ok {
				t.Fatalf("watch ended after %v", got)
			}
			if ev.Type == watch.Added {
				got = append(got, ev.Object.(*coordinationv1.Lease).Name)
			}
		case <-timeout:
			t.Fatalf("after 60s the watch delivered %v of %v", got, names)
		}
	}
	if strings.Join(got, ",") != strings.Join(names, ",") {
		t.Fatalf("the watch delivered %v, want %v in order", got, names)
	}
	if err := victim.Restart(); err != nil {
		t.Fatal(err)
	}
}

func TestServerWithAnotherCARefusesToJoin(t *testing.T) {
	c := needCluster(t)
	dir := t.TempDir()
	if out, err := exec.Command(bins.kumod, "pki", "init", "--data-dir", dir).CombinedOutput(); err != nil {
		t.Fatalf("kumod pki init: %v: %s", err, out)
	}
	var initial []string
	for _, s := range c.Servers {
		initial = append(initial, fmt.Sprintf("%s=https://%s:%d", s.Name, s.IP, c.EtcdPeer))
	}
	stranger := &Server{Name: "s4", IP: "127.0.0.4", Dir: dir}
	initial = append(initial, fmt.Sprintf("s4=https://127.0.0.4:%d", c.EtcdPeer))
	stranger.args = append(c.serverArgs(stranger, strings.Join(initial, ","), ""), "--etcd-initial-cluster-state", "existing")
	if err := stranger.start(); err != nil {
		t.Fatal(err)
	}
	defer stranger.Stop()
	select {
	case <-stranger.done:
	case <-time.After(60 * time.Second):
		t.Fatalf("a server with another CA still runs after 60s:\n%s", stranger.Log())
	}
	if !strings.Contains(stranger.Log(), "different CAs") {
		t.Fatalf("the refusal does not say the CAs differ (%v):\n%s", stranger.cmd.ProcessState, stranger.Log())
	}
	if n := len(etcdMembers(t, c)); n != 3 {
		t.Fatalf("etcd has %d members after the stranger tried, want 3", n)
	}
}

func TestPKIInitRefusesExistingSecrets(t *testing.T) {
	if testing.Short() {
		t.Skip("builds kumod (skipped with -short)")
	}
	dir := t.TempDir()
	if out, err := exec.Command(bins.kumod, "pki", "init", "--data-dir", dir).CombinedOutput(); err != nil {
		t.Fatalf("kumod pki init: %v: %s", err, out)
	}
	for _, f := range []string{"ca.crt", "ca.key", "token.key", "encryption.yaml"} {
		if _, err := os.Stat(filepath.Join(dir, "pki", f)); err != nil {
			t.Fatalf("pki init made no %s: %v", f, err)
		}
	}
	out, err := exec.Command(bins.kumod, "pki", "init", "--data-dir", dir).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "already exists") {
		t.Fatalf("a second pki init over the same directory: %v: %s", err, out)
	}
}

// startAgent runs kumod agent for node with the three servers, first first.
func startAgent(t *testing.T, c *Cluster, node string, first *Server) *Server {
	t.Helper()
	dir := t.TempDir()
	kc := filepath.Join(dir, "node.kubeconfig")
	if out, err := exec.Command(bins.kumo, "--kubeconfig", first.Kubeconfig(), "node", "kubeconfig", node, "-o", kc).CombinedOutput(); err != nil {
		t.Fatalf("kumo node kubeconfig: %v: %s", err, out)
	}
	args := []string{"agent", "--node", node, "--datacenter", "dc1", "--data-dir", dir, "--kubeconfig", kc, "--accel", "tcg", "--server", first.URL(c)}
	for _, s := range c.Servers {
		if s != first {
			args = append(args, "--server", s.URL(c))
		}
	}
	a := &Server{Name: node, Dir: dir, args: args}
	if err := a.start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		a.Stop()
		if t.Failed() {
			t.Logf("agent log:\n%s", a.Log())
		}
	})
	return a
}

func getNode(ctx context.Context, c *client.Client, name string) (*kumo.Node, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	n := &kumo.Node{}
	return n, c.Kumo.Get().Resource("nodes").Name(name).Do(ctx).Into(n)
}

func nodeReady(n *kumo.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == "Ready" {
			return c.Status == metav1.ConditionTrue
		}
	}
	return false
}

func createLeases(t *testing.T, c *client.Client, prefix string, n int) []string {
	t.Helper()
	var names []string
	for i := 0; i < n; i++ {
		name := fmt.Sprintf("%s-%d", prefix, i)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, err := c.Core.CoordinationV1().Leases("kumo-system").Create(ctx, &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
		cancel()
		if err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatalf("create lease %s: %v", name, err)
		}
		names = append(names, name)
	}
	return names
}

// etcdClient reaches the members with a server's etcd client certificate.
func etcdClient(t *testing.T, c *Cluster, endpoints []string) *clientv3.Client {
	t.Helper()
	pki := filepath.Join(c.Servers[0].Dir, "pki")
	info := transport.TLSInfo{CertFile: filepath.Join(pki, "etcd-client.crt"), KeyFile: filepath.Join(pki, "etcd-client.key"), TrustedCAFile: filepath.Join(pki, "ca.crt")}
	tlsCfg, err := info.ClientConfig()
	if err != nil {
		t.Fatal(err)
	}
	cl, err := clientv3.New(clientv3.Config{Endpoints: endpoints, TLS: tlsCfg, DialTimeout: 3 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	return cl
}

func (c *Cluster) etcdEndpoints() []string {
	var out []string
	for _, s := range c.Servers {
		out = append(out, fmt.Sprintf("https://%s:%d", s.IP, c.EtcdClient))
	}
	return out
}

func etcdMembers(t *testing.T, c *Cluster) []string {
	t.Helper()
	cl := etcdClient(t, c, c.etcdEndpoints())
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := cl.MemberList(ctx)
	if err != nil {
		t.Fatalf("etcd member list: %v", err)
	}
	var names []string
	for _, m := range resp.Members {
		names = append(names, m.Name)
	}
	return names
}

// healthyMembers counts the members that answer a status request.
func healthyMembers(t *testing.T, c *Cluster) int {
	n := 0
	for _, ep := range c.etcdEndpoints() {
		cl := etcdClient(t, c, []string{ep})
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		if st, err := cl.Status(ctx, ep); err == nil && len(st.Errors) == 0 {
			n++
		}
		cancel()
		cl.Close()
	}
	return n
}
