package lab

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sync/errgroup"
)

// Up builds the lab described by cfg from nothing, after removing whatever an earlier lab in
// the same directory left (processes, namespaces, links, data). It prints where everything is
// to out and returns the lab's state.
func Up(ctx context.Context, cfg Config, out io.Writer) (*State, error) {
	t0 := time.Now()
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	if os.Geteuid() != 0 {
		return nil, errors.New("the lab needs root (network namespaces, veths, bridges)")
	}
	for _, b := range []string{"kumod", "kumo"} {
		if _, err := os.Stat(filepath.Join(cfg.BinDir, b)); err != nil {
			return nil, fmt.Errorf("binary %s not found in %s (make build, or --bin-dir): %w", b, cfg.BinDir, err)
		}
	}
	if err := Clean(cfg.Dir, out); err != nil {
		return nil, fmt.Errorf("clean up an earlier lab: %w", err)
	}
	subnet := netip.MustParsePrefix(cfg.Subnet).Masked()
	external := netip.MustParsePrefix(cfg.External).Masked()
	if err := checkHostRoutes(subnet, external); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Join(cfg.Dir, "logs"), 0o755); err != nil {
		return nil, fmt.Errorf("lab directory: %w", err)
	}
	s := &State{
		Dir: cfg.Dir, Subnet: subnet.String(), External: external.String(),
		HostAddress:  addrFor(subnet, 1).String(),
		InternetAddr: addrFor(external, 254).String(),
		Kubeconfig:   filepath.Join(cfg.Dir, "admin.kubeconfig"),
		RepoRoot:     cfg.RepoRoot, BinDir: cfg.BinDir, Created: time.Now().UTC(),
	}
	for d := 1; d <= cfg.Datacenters; d++ {
		name := fmt.Sprintf("dc%d", d)
		addr := dcAddr(subnet, d).String()
		s.Datacenters = append(s.Datacenters, Datacenter{
			Name: name, Namespace: NamespacePrefix + name, Address: addr,
			URL:     fmt.Sprintf("https://%s:%d", addr, apiPort),
			DataDir: filepath.Join(cfg.Dir, name, "server"),
		})
		for k := 1; k <= cfg.NodesPerDC; k++ {
			n := fmt.Sprintf("%s-n%d", name, k)
			s.Nodes = append(s.Nodes, Node{
				Name: n, Datacenter: name, Namespace: NamespacePrefix + n,
				Address: nodeAddr(subnet, d, k).String(),
				DataDir: filepath.Join(cfg.Dir, name, n),
			})
		}
	}
	// Saved before anything is made, so that down finds a half-built lab.
	if err := s.Save(); err != nil {
		return nil, err
	}
	if err := buildNetwork(s, subnet, external); err != nil {
		return s, err
	}
	step(out, t0, "network: %d namespaces on %s (bridge %s in %s), host %s on %s", len(s.Namespaces), subnet, underlayBridge, UnderlayNamespace, s.HostAddress, HostLink)

	replicated, err := supportsReplicatedControlPlane(ctx, cfg.BinDir)
	if err != nil {
		return s, err
	}
	s.ReplicatedCP = replicated && cfg.Datacenters > 1
	if err := prepareServers(ctx, s, cfg); err != nil {
		return s, err
	}

	// Ceph and the servers come up side by side.
	g, gctx := errgroup.WithContext(ctx)
	var cephDaemons [][]Process
	if !cfg.NoCeph {
		s.CephDir = filepath.Join(cfg.Dir, "ceph")
		s.CephConf = filepath.Join(s.CephDir, "ceph.conf")
		var spec []string
		for _, dc := range s.Datacenters {
			spec = append(spec, fmt.Sprintf("%s=%s@%s", dc.Name, dc.Address, dc.Namespace))
		}
		s.CephEnv = []string{"CEPH_DATACENTERS=" + strings.Join(spec, " "), "CEPH_OSD_SIZE=" + cfg.CephOSDSize}
		g.Go(func() error {
			var err error
			if cephDaemons, err = runCephUp(gctx, s); err != nil {
				return err
			}
			step(out, t0, "ceph: %d monitors, %d OSDs, 1 mgr (conf %s)", len(s.Datacenters), len(s.Datacenters), s.CephConf)
			return nil
		})
	}
	g.Go(func() error {
		for i := range s.Datacenters {
			dc := &s.Datacenters[i]
			if dc.Server == nil {
				continue
			}
			if err := start(gctx, dc.Server); err != nil {
				return err
			}
		}
		if err := s.Save(); err != nil {
			return err
		}
		if err := waitServers(gctx, s, 2*time.Minute); err != nil {
			return err
		}
		step(out, t0, "servers ready: %s", strings.Join(s.ServerURLs(), " "))
		return nodeKubeconfigs(gctx, s)
	})
	err = g.Wait()
	for i := range cephDaemons {
		s.Datacenters[i].Ceph = cephDaemons[i]
	}
	if err != nil {
		_ = s.Save()
		return s, err
	}
	if err := s.Save(); err != nil {
		return s, err
	}
	if err := startAgents(ctx, s, cfg); err != nil {
		return s, err
	}
	if err := WaitNodesReady(ctx, s, 2*time.Minute); err != nil {
		return s, err
	}
	s.UpDuration = time.Since(t0).Round(100 * time.Millisecond).String()
	step(out, t0, "%d nodes Ready", len(s.Nodes))
	if err := s.Save(); err != nil {
		return s, err
	}
	s.Print(out)
	return s, nil
}

func step(out io.Writer, t0 time.Time, format string, args ...any) {
	fmt.Fprintf(out, "[kumo-lab +%5.1fs] %s\n", time.Since(t0).Seconds(), fmt.Sprintf(format, args...))
}

// buildNetwork makes the namespaces, the underlay and external bridges, every namespace's veth
// and the host's.
func buildNetwork(s *State, subnet, external netip.Prefix) error {
	add := func(ns string) error {
		if err := newNamespace(ns); err != nil {
			return err
		}
		s.Namespaces = append(s.Namespaces, ns)
		return s.Save()
	}
	if err := add(UnderlayNamespace); err != nil {
		return err
	}
	u, err := handleIn(UnderlayNamespace)
	if err != nil {
		return err
	}
	defer u.Close()
	for _, br := range []string{underlayBridge, externalBridge} {
		if err := bridge(u, br); err != nil {
			return err
		}
	}
	pfx := func(a string) netip.Prefix { return netip.PrefixFrom(netip.MustParseAddr(a), subnet.Bits()) }
	for _, dc := range s.Datacenters {
		if err := add(dc.Namespace); err != nil {
			return err
		}
		if err := plug(u, underlayBridge, portName(dc.Namespace), dc.Namespace, labLink, pfx(dc.Address), netip.Addr{}); err != nil {
			return err
		}
	}
	for _, n := range s.Nodes {
		if err := add(n.Namespace); err != nil {
			return err
		}
		if err := plug(u, underlayBridge, portName(n.Namespace), n.Namespace, labLink, pfx(n.Address), netip.Addr{}); err != nil {
			return err
		}
	}
	// The internet namespace: an outside client on the external segment. Its default route
	// points at the segment's first address, which the networking work's gateway will take;
	// until then it reaches nothing but its segment.
	if err := add(InternetNamespace); err != nil {
		return err
	}
	if err := plug(u, externalBridge, portName(InternetNamespace), InternetNamespace, externalLink,
		netip.PrefixFrom(netip.MustParseAddr(s.InternetAddr), external.Bits()), addrFor(external, 1)); err != nil {
		return err
	}
	return plugHost(u, subnet)
}

// supportsReplicatedControlPlane tells whether kumod can run one embedded etcd member per
// server (--etcd-initial-cluster); without it the lab runs a single server in the first
// datacenter.
func supportsReplicatedControlPlane(ctx context.Context, binDir string) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	b, err := exec.CommandContext(ctx, filepath.Join(binDir, "kumod"), "server", "--help").CombinedOutput()
	if err != nil {
		return false, fmt.Errorf("kumod server --help: %w: %s", err, b)
	}
	return strings.Contains(string(b), "--etcd-initial-cluster"), nil
}

// prepareServers writes the shared PKI (replicated control plane) and each server's command.
func prepareServers(ctx context.Context, s *State, cfg Config) error {
	kumod := filepath.Join(cfg.BinDir, "kumod")
	var peers, apis []string
	for _, dc := range s.Datacenters {
		peers = append(peers, fmt.Sprintf("%s=https://%s:%d", dc.Name, dc.Address, etcdPeerPort))
		apis = append(apis, dc.URL)
	}
	if s.ReplicatedCP {
		shared := filepath.Join(s.Dir, "pki-init")
		if err := run(ctx, 30*time.Second, kumod, "pki", "init", "--data-dir", shared); err != nil {
			return err
		}
		for _, dc := range s.Datacenters {
			if err := copyDir(filepath.Join(shared, "pki"), filepath.Join(dc.DataDir, "pki")); err != nil {
				return fmt.Errorf("shared PKI for %s: %w", dc.Name, err)
			}
		}
	}
	lease := time.Duration(cfg.LeaseSeconds) * time.Second
	for i := range s.Datacenters {
		dc := &s.Datacenters[i]
		if !s.ReplicatedCP && i > 0 {
			continue
		}
		if err := os.MkdirAll(dc.DataDir, 0o700); err != nil {
			return fmt.Errorf("data directory of %s: %w", dc.Name, err)
		}
		argv := []string{kumod, "server", "--data-dir", dc.DataDir,
			"--bind-address", dc.Address, "--advertise-address", dc.Address, "--port", fmt.Sprint(apiPort),
			"--etcd-client-port", fmt.Sprint(etcdClientPort), "--etcd-peer-port", fmt.Sprint(etcdPeerPort)}
		if s.ReplicatedCP {
			argv = append(argv, "--etcd-name", dc.Name, "--etcd-advertise-address", dc.Address,
				"--etcd-initial-cluster", strings.Join(peers, ","), "--etcd-initial-cluster-state", "new",
				"--api-servers", strings.Join(apis, ","),
				"--leader-elect-lease-duration", lease.String(),
				"--leader-elect-renew-deadline", (lease * 2 / 3).String(),
				"--leader-elect-retry-period", (lease / 6).String())
		}
		dc.Server = &Process{Name: "server-" + dc.Name, Namespace: dc.Namespace, Argv: argv,
			Log: filepath.Join(s.Dir, "logs", "server-"+dc.Name+".log")}
	}
	return s.Save()
}

// waitServers waits until every server answers /readyz, then copies the first server's admin
// kubeconfig to the lab's.
func waitServers(ctx context.Context, s *State, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for _, dc := range s.Datacenters {
		if dc.Server == nil {
			continue
		}
		if err := waitReadyz(ctx, filepath.Join(dc.DataDir, "admin.kubeconfig"), dc.URL, dc.Server); err != nil {
			return fmt.Errorf("server of %s: %w (log %s)", dc.Name, err, dc.Server.Log)
		}
	}
	for _, dc := range s.Datacenters {
		if dc.Server != nil {
			return copyFile(filepath.Join(dc.DataDir, "admin.kubeconfig"), s.Kubeconfig, 0o600)
		}
	}
	return errors.New("the lab runs no server")
}

// nodeKubeconfigs issues each node's credentials with kumo node kubeconfig.
func nodeKubeconfigs(ctx context.Context, s *State) error {
	kumo := filepath.Join(s.BinDir, "kumo")
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(3)
	for _, n := range s.Nodes {
		g.Go(func() error {
			if err := os.MkdirAll(n.DataDir, 0o700); err != nil {
				return fmt.Errorf("data directory of %s: %w", n.Name, err)
			}
			return run(gctx, 30*time.Second, kumo, "--kubeconfig", s.Kubeconfig, "node", "kubeconfig", n.Name,
				"-o", filepath.Join(n.DataDir, "node.kubeconfig"))
		})
	}
	return g.Wait()
}

// startAgents starts one agent per node namespace.
func startAgents(ctx context.Context, s *State, cfg Config) error {
	kumod := filepath.Join(cfg.BinDir, "kumod")
	multi := s.ReplicatedCP
	for i := range s.Nodes {
		n := &s.Nodes[i]
		stream := fmt.Sprintf("%s:%d", n.Address, agentStreamPort)
		argv := []string{kumod, "agent", "--node", n.Name, "--datacenter", n.Datacenter,
			"--data-dir", n.DataDir, "--kubeconfig", filepath.Join(n.DataDir, "node.kubeconfig"),
			"--images-dir", cfg.ImagesDir, "--accel", "tcg",
			"--cpus", fmt.Sprint(cfg.NodeCPUs), "--memory", cfg.NodeMemory,
			"--stream-listen", stream, "--stream-advertise", n.Address,
			"--import-allowed-networks", s.Subnet + ",127.0.0.0/8",
			"--image-import-allowed-networks", s.Subnet + ",127.0.0.0/8"}
		if s.CephConf != "" {
			argv = append(argv, "--ceph-conf", s.CephConf, "--ceph-user", "kumo", "--ceph-pool", "kumo")
		}
		if multi {
			for _, u := range s.ServerURLs() {
				argv = append(argv, "--server", u)
			}
		}
		n.Agent = &Process{Name: "agent-" + n.Name, Namespace: n.Namespace, Argv: argv,
			Log: filepath.Join(s.Dir, "logs", "agent-"+n.Name+".log")}
		if err := start(ctx, n.Agent); err != nil {
			return err
		}
		if err := s.Save(); err != nil {
			return err
		}
	}
	return nil
}

// run runs a short command with a deadline; its output goes into the error when it fails.
func run(ctx context.Context, timeout time.Duration, argv ...string) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	b, err := exec.CommandContext(ctx, argv[0], argv[1:]...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %w: %s", strings.Join(argv, " "), err, strings.TrimSpace(string(b)))
	}
	return nil
}

func copyFile(src, dst string, mode os.FileMode) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	return os.WriteFile(dst, b, mode)
}

func copyDir(src, dst string) error {
	entries, err := os.ReadDir(src)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dst, 0o700); err != nil {
		return err
	}
	for _, e := range entries {
		if e.IsDir() {
			if err := copyDir(filepath.Join(src, e.Name()), filepath.Join(dst, e.Name())); err != nil {
				return err
			}
			continue
		}
		if err := copyFile(filepath.Join(src, e.Name()), filepath.Join(dst, e.Name()), 0o600); err != nil {
			return err
		}
	}
	return nil
}
