package etcd

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	"go.etcd.io/etcd/server/v3/embed"
)

// peerProbeEvery is how often a starting member checks that its peers share its CA.
const peerProbeEvery = 2 * time.Second

// Peer is one member of the initial cluster.
type Peer struct {
	Name    string
	PeerURL *url.URL
}

// Cluster makes an embedded member one of several, over TLS.
type Cluster struct {
	// CAFile is the cluster CA; CertFile and KeyFile the member's certificate (serving and client
	// authentication, common name AllowedCN), used for peers and clients alike.
	CAFile, CertFile, KeyFile string
	// AllowedCN is the only common name the member accepts from peers and clients.
	AllowedCN string
	// InitialCluster lists every member, this one included.
	InitialCluster []Peer
	// State is "new" (the members bootstrap together) or "existing" (joining a running cluster).
	State string
	// HeartbeatInterval and ElectionTimeout are raft's timings (Default* when zero).
	HeartbeatInterval, ElectionTimeout time.Duration
}

// ParseInitialCluster reads name=https://IP:PORT,... as etcd's --initial-cluster does.
func ParseInitialCluster(s string) ([]Peer, error) {
	var peers []Peer
	names := map[string]bool{}
	for _, item := range strings.Split(s, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		name, raw, ok := strings.Cut(item, "=")
		if !ok || name == "" {
			return nil, fmt.Errorf("--etcd-initial-cluster: %q is not NAME=https://IP:PORT", item)
		}
		u, err := url.Parse(raw)
		if err != nil || u.Scheme != "https" || u.Port() == "" || net.ParseIP(u.Hostname()) == nil {
			return nil, fmt.Errorf("--etcd-initial-cluster: member %s: %q is not https://IP:PORT", name, raw)
		}
		if names[name] {
			return nil, fmt.Errorf("--etcd-initial-cluster: member %s is named twice", name)
		}
		names[name] = true
		peers = append(peers, Peer{Name: name, PeerURL: u})
	}
	if len(peers) == 0 {
		return nil, errors.New("--etcd-initial-cluster is empty")
	}
	return peers, nil
}

// ClientURLs are the members' client URLs: each member's peer address with clientPort (every
// member of a Kumo cluster listens for clients on the same port), own's first.
func ClientURLs(peers []Peer, own string, clientPort int) []string {
	var out []string
	for _, p := range peers {
		u := "https://" + net.JoinHostPort(p.PeerURL.Hostname(), strconv.Itoa(clientPort))
		if p.Name == own {
			out = append([]string{u}, out...)
		} else {
			out = append(out, u)
		}
	}
	return out
}

func (c *Cluster) apply(ec *embed.Config, name string) error {
	var parts []string
	found := false
	for _, p := range c.InitialCluster {
		parts = append(parts, p.Name+"="+p.PeerURL.String())
		found = found || p.Name == name
	}
	if !found {
		return fmt.Errorf("--etcd-initial-cluster does not name this member (%s)", name)
	}
	switch c.State {
	case embed.ClusterStateFlagNew, embed.ClusterStateFlagExisting:
	default:
		return fmt.Errorf("--etcd-initial-cluster-state %q: want new or existing", c.State)
	}
	ec.InitialCluster = strings.Join(parts, ",")
	ec.ClusterState = c.State
	ec.InitialClusterToken = "kumo"
	hb, el := c.HeartbeatInterval, c.ElectionTimeout
	if hb == 0 {
		hb = DefaultHeartbeatInterval
	}
	if el == 0 {
		el = DefaultElectionTimeout
	}
	if el < 5*hb {
		return fmt.Errorf("etcd election timeout %s must be at least 5 heartbeat intervals (%s)", el, hb)
	}
	ec.TickMs, ec.ElectionMs = uint(hb/time.Millisecond), uint(el/time.Millisecond)
	tlsInfo := transport.TLSInfo{
		CertFile: c.CertFile, KeyFile: c.KeyFile, TrustedCAFile: c.CAFile,
		ClientCertAuth: true, AllowedCNs: []string{c.AllowedCN},
	}
	ec.ClientTLSInfo, ec.PeerTLSInfo = tlsInfo, tlsInfo
	return nil
}

// watchPeers checks, until ctx ends, that every other member reachable presents a certificate of
// this member's CA and accepts this member's certificate: a server whose pki holds another CA
// than its peers' would otherwise only log TLS errors and wait forever. It returns only such a
// mismatch (or ctx's end).
func (c *Cluster) watchPeers(ctx context.Context, own string) error {
	caPEM, err := os.ReadFile(c.CAFile)
	if err != nil {
		return fmt.Errorf("read the cluster CA %s: %w", c.CAFile, err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(caPEM) {
		return fmt.Errorf("cluster CA %s holds no certificate", c.CAFile)
	}
	cert, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
	if err != nil {
		return fmt.Errorf("etcd member certificate %s: %w", c.CertFile, err)
	}
	t := time.NewTicker(peerProbeEvery)
	defer t.Stop()
	for {
		for _, p := range c.InitialCluster {
			if p.Name == own {
				continue
			}
			if err := probePeer(ctx, p, roots, cert); err != nil {
				return err
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

// errCAMismatch marks a peer of another CA.
var errCAMismatch = errors.New("the servers' pki directories hold different CAs: copy the files of one `kumod pki init` into every server's DATA-DIR/pki")

// probePeer opens a TLS connection to a peer: an unreachable peer is not an error (it may be
// starting); a certificate of another CA, either way, is.
func probePeer(ctx context.Context, p Peer, roots *x509.CertPool, cert tls.Certificate) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	d := tls.Dialer{NetDialer: &net.Dialer{}, Config: &tls.Config{
		RootCAs: roots, Certificates: []tls.Certificate{cert}, ServerName: p.PeerURL.Hostname(), MinVersion: tls.VersionTLS12,
	}}
	conn, err := d.DialContext(ctx, "tcp", p.PeerURL.Host)
	if err != nil {
		var unknown x509.UnknownAuthorityError
		if errors.As(err, &unknown) {
			return fmt.Errorf("etcd peer %s at %s presents a certificate not signed by this server's CA: %w", p.Name, p.PeerURL, errCAMismatch)
		}
		if isCARejection(err) {
			return fmt.Errorf("etcd peer %s at %s refuses this server's certificate (%v): %w", p.Name, p.PeerURL, err, errCAMismatch)
		}
		slog.Debug("etcd peer not reachable yet", "peer", p.Name, "url", p.PeerURL.String(), "err", err)
		return nil
	}
	defer conn.Close()
	// Under TLS 1.3 the server checks the client's certificate after the client's handshake is
	// done: its refusal arrives as an alert on the first read.
	_ = conn.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
	if _, err := conn.Read(make([]byte, 1)); err != nil && isCARejection(err) {
		return fmt.Errorf("etcd peer %s at %s refuses this server's certificate (%v): %w", p.Name, p.PeerURL, err, errCAMismatch)
	}
	return nil
}

func isCARejection(err error) bool {
	msg := err.Error()
	return strings.Contains(msg, "remote error: tls: unknown certificate authority") || strings.Contains(msg, "remote error: tls: bad certificate")
}
