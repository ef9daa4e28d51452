// Package lab is the lab harness: a Kumo cluster of several datacenters on one machine, for
// demonstrations and multi-node system tests, with fault injection.
//
// Each datacenter gets a control network namespace (kumo-lab-dcN: its kumod server with its
// embedded etcd member, its Ceph monitor and OSD) and node namespaces (kumo-lab-dcN-nK: one
// kumod agent each, and the QEMUs it starts). Every namespace has one veth into the underlay
// bridge, which lives in a namespace of its own (kumo-lab-underlay), and an address on the lab
// subnet (10.213.0.0/24 by default). The host reaches the underlay through one veth pair whose
// host end has the subnet's first address, so kumo on the host talks to the lab's servers; no
// route sends lab addresses anywhere else. An "internet" namespace sits on a second, external
// segment (203.0.113.0/24) for the networking work; nothing routes between the two yet.
//
// Processes are started inside their namespace by switching a locked OS thread into it
// (netns.Set) before forking, detached into their own session, with their output in the lab
// directory; their pids and start times are kept in DIR/state.json, which status, down, the
// fault functions and Heal read. Ceph is brought up by hack/ceph/up.sh with CEPH_DATACENTERS,
// which starts each daemon with `ip netns exec`.
package lab

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"time"
)

// Names and addresses the lab uses.
const (
	NamespacePrefix   = "kumo-lab-"
	UnderlayNamespace = NamespacePrefix + "underlay"
	InternetNamespace = NamespacePrefix + "internet"
	HostLink          = "kumo-lab0" // the host end of the host's veth into the underlay
	underlayBridge    = "br-underlay"
	externalBridge    = "br-external"
	labLink           = "lab0" // the underlay veth end inside a datacenter or node namespace
	externalLink      = "ext0" // the internet namespace's veth end
	DefaultSubnet     = "10.213.0.0/24"
	DefaultExternal   = "203.0.113.0/24"
	apiPort           = 6443
	etcdClientPort    = 2379
	etcdPeerPort      = 2380
	agentStreamPort   = 10250
)

// Config sizes the lab. The zero value of a field means its default.
type Config struct {
	Dir          string // state, data and logs (default _output/lab)
	BinDir       string // kumod and kumo (default: the directory of this executable)
	ImagesDir    string // golden images for the agents (default $KUMO_IMAGES_DIR or _output/images)
	RepoRoot     string // where hack/ceph/up.sh is (default: found from the working directory)
	Datacenters  int    // 1..9 (default 3)
	NodesPerDC   int    // 1..9 (default 2)
	NodeCPUs     int    // vCPUs each agent offers (default 4)
	NodeMemory   string // memory each agent offers (default 4Gi)
	Subnet       string // the underlay (default 10.213.0.0/24)
	External     string // the internet namespace's segment (default 203.0.113.0/24)
	NoCeph       bool   // leave Ceph out (agents get no replicated class)
	CephOSDSize  string // bluestore size per OSD (default 3G, a sparse file)
	LeaseSeconds int    // leader election lease (default 3; renew deadline 2/3 of it, retry 1/6)
}

func (c *Config) defaults() error {
	if c.Dir == "" {
		c.Dir = filepath.Join("_output", "lab")
	}
	dir, err := filepath.Abs(c.Dir)
	if err != nil {
		return fmt.Errorf("lab directory %s: %w", c.Dir, err)
	}
	c.Dir = dir
	if c.BinDir == "" {
		exe, err := os.Executable()
		if err != nil {
			return fmt.Errorf("find the binaries: %w", err)
		}
		c.BinDir = filepath.Dir(exe)
	}
	if c.RepoRoot == "" {
		root, err := findRepoRoot()
		if err != nil {
			return err
		}
		c.RepoRoot = root
	}
	if c.ImagesDir == "" {
		c.ImagesDir = os.Getenv("KUMO_IMAGES_DIR")
	}
	if c.ImagesDir == "" {
		c.ImagesDir = filepath.Join(c.RepoRoot, "_output", "images")
	}
	if c.Datacenters == 0 {
		c.Datacenters = 3
	}
	if c.NodesPerDC == 0 {
		c.NodesPerDC = 2
	}
	if c.NodeCPUs == 0 {
		c.NodeCPUs = 4
	}
	if c.NodeMemory == "" {
		c.NodeMemory = "4Gi"
	}
	if c.Subnet == "" {
		c.Subnet = DefaultSubnet
	}
	if c.External == "" {
		c.External = DefaultExternal
	}
	if c.CephOSDSize == "" {
		c.CephOSDSize = "3G"
	}
	if c.LeaseSeconds == 0 {
		c.LeaseSeconds = 3
	}
	switch {
	case c.Datacenters < 1 || c.Datacenters > 9:
		return fmt.Errorf("datacenters: %d is not between 1 and 9", c.Datacenters)
	case c.NodesPerDC < 1 || c.NodesPerDC > 9:
		return fmt.Errorf("nodes-per-dc: %d is not between 1 and 9", c.NodesPerDC)
	case c.NodeCPUs < 1:
		return fmt.Errorf("node-cpus: %d must be at least 1", c.NodeCPUs)
	case c.LeaseSeconds < 2:
		return fmt.Errorf("lease: %ds must be at least 2s", c.LeaseSeconds)
	}
	for _, p := range []struct{ name, v string }{{"subnet", c.Subnet}, {"external", c.External}} {
		pfx, err := netip.ParsePrefix(p.v)
		if err != nil || !pfx.Addr().Is4() || pfx.Bits() > 24 {
			return fmt.Errorf("%s: %q is not an IPv4 prefix of /24 or larger", p.name, p.v)
		}
	}
	return nil
}

func findRepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "hack", "ceph", "up.sh")); err == nil {
			return d, nil
		}
		if filepath.Dir(d) == d {
			return "", fmt.Errorf("no hack/ceph/up.sh in %s or above: run from the repository or pass the repository root", dir)
		}
	}
}

// Process is a long-running process of the lab: a server, an agent or a Ceph daemon.
type Process struct {
	Name      string   `json:"name"`      // e.g. server-dc1, agent-dc1-n1, ceph-osd.0
	Namespace string   `json:"namespace"` // the network namespace it runs in
	Argv      []string `json:"argv"`
	Log       string   `json:"log"`
	PID       int      `json:"pid"`
	StartTime uint64   `json:"startTime"` // from /proc/PID/stat, so a reused pid is not taken for it
	// PIDFile is set for daemons that fork themselves (Ceph): their pid is read from it.
	PIDFile string `json:"pidFile,omitempty"`
}

// Datacenter is one datacenter's control namespace and what runs in it.
type Datacenter struct {
	Name      string    `json:"name"` // dc1
	Namespace string    `json:"namespace"`
	Address   string    `json:"address"` // on the underlay
	URL       string    `json:"url"`     // its API server
	DataDir   string    `json:"dataDir"` // its server's data directory
	Server    *Process  `json:"server,omitempty"`
	Ceph      []Process `json:"ceph,omitempty"` // its monitor, OSD (and the mgr in the first)
}

// Node is one node namespace and its agent.
type Node struct {
	Name       string   `json:"name"` // dc1-n1
	Datacenter string   `json:"datacenter"`
	Namespace  string   `json:"namespace"`
	Address    string   `json:"address"`
	DataDir    string   `json:"dataDir"`
	Agent      *Process `json:"agent,omitempty"`
}

// State is what the lab made; it is written to DIR/state.json.
type State struct {
	Dir            string       `json:"dir"`
	Subnet         string       `json:"subnet"`
	HostAddress    string       `json:"hostAddress"`
	External       string       `json:"external"`
	InternetAddr   string       `json:"internetAddress"`
	Kubeconfig     string       `json:"kubeconfig"`
	CephDir        string       `json:"cephDir,omitempty"`
	CephConf       string       `json:"cephConf,omitempty"`
	CephEnv        []string     `json:"cephEnv,omitempty"` // CEPH_DATACENTERS=... for hack/ceph/up.sh
	RepoRoot       string       `json:"repoRoot"`
	BinDir         string       `json:"binDir"`
	ReplicatedCP   bool         `json:"replicatedControlPlane"` // one etcd member per datacenter
	Datacenters    []Datacenter `json:"datacenters"`
	Nodes          []Node       `json:"nodes"`
	Namespaces     []string     `json:"namespaces"`
	UpDuration     string       `json:"upDuration,omitempty"`
	Created        time.Time    `json:"created"`
	PartitionedNow []string     `json:"partitioned,omitempty"` // namespaces whose underlay link is down
}

// StatePath is where the lab in dir keeps its state.
func StatePath(dir string) string { return filepath.Join(dir, "state.json") }

// ErrNoLab says there is no lab state in the directory.
var ErrNoLab = errors.New("no lab here (no state.json): run kumo-lab up")

// Load reads the state of the lab in dir.
func Load(dir string) (*State, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	b, err := os.ReadFile(StatePath(abs))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%s: %w", abs, ErrNoLab)
	}
	if err != nil {
		return nil, fmt.Errorf("read lab state: %w", err)
	}
	var s State
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("decode %s: %w", StatePath(abs), err)
	}
	return &s, nil
}

// Save writes the state atomically.
func (s *State) Save() error {
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	tmp := StatePath(s.Dir) + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return fmt.Errorf("write lab state: %w", err)
	}
	return os.Rename(tmp, StatePath(s.Dir))
}

// DC returns the named datacenter.
func (s *State) DC(name string) (*Datacenter, error) {
	for i := range s.Datacenters {
		if s.Datacenters[i].Name == name {
			return &s.Datacenters[i], nil
		}
	}
	return nil, fmt.Errorf("no datacenter %q in the lab (have %s)", name, s.dcNames())
}

// Node returns the named node.
func (s *State) Node(name string) (*Node, error) {
	for i := range s.Nodes {
		if s.Nodes[i].Name == name {
			return &s.Nodes[i], nil
		}
	}
	return nil, fmt.Errorf("no node %q in the lab", name)
}

// ServerURLs lists the URLs of every datacenter's API server that the lab runs.
func (s *State) ServerURLs() []string {
	var urls []string
	for _, dc := range s.Datacenters {
		if dc.Server != nil {
			urls = append(urls, dc.URL)
		}
	}
	return urls
}

func (s *State) dcNames() string {
	var out string
	for i, dc := range s.Datacenters {
		if i > 0 {
			out += ", "
		}
		out += dc.Name
	}
	return out
}

// NamespaceOf resolves a target of exec: a node (dc1-n1), a datacenter (dc1), "internet",
// "underlay", or a namespace's full name.
func (s *State) NamespaceOf(target string) (string, error) {
	switch target {
	case "internet":
		return InternetNamespace, nil
	case "underlay":
		return UnderlayNamespace, nil
	}
	if n, err := s.Node(target); err == nil {
		return n.Namespace, nil
	}
	if dc, err := s.DC(target); err == nil {
		return dc.Namespace, nil
	}
	for _, ns := range s.Namespaces {
		if ns == target {
			return ns, nil
		}
	}
	return "", fmt.Errorf("target %q is not a node, a datacenter (%s), internet or underlay", target, s.dcNames())
}
