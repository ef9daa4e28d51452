// Package etcd runs the embedded etcd member the server stores its objects in when no external
// cluster is given: either one loopback member (all-in-one, a single server), or one member of a
// cluster of servers, talking to its peers and clients over TLS with certificates from the
// cluster's CA (cluster.go).
package etcd

import (
	"context"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
)

// startTimeout bounds how long a single member may take to become ready; a member of a cluster
// needs a quorum of its peers up and gets clusterStartTimeout.
const (
	startTimeout        = 60 * time.Second
	clusterStartTimeout = 5 * time.Minute
)

// Raft timings of a cluster member, for servers on one LAN or datacenters a few milliseconds
// apart (etcd's own defaults, which its tuning guide gives for round trips under ~10 ms): a leader
// heartbeat every 100 ms, a follower calls an election after 1 s without one. A dead etcd leader
// is thus replaced in about 1-2 s, well inside the API's leader-election lease. Across datacenters
// with larger round trips, raise both (heartbeat ~ the round trip, election ~10x the heartbeat).
const (
	DefaultHeartbeatInterval = 100 * time.Millisecond
	DefaultElectionTimeout   = 1000 * time.Millisecond
)

// Config places the member.
type Config struct {
	// Dir holds the member's data.
	Dir string
	// ClientURL and PeerURL are where it listens (loopback by default; https:// in a cluster).
	ClientURL, PeerURL string
	// Name of the member.
	Name string
	// Cluster, when set, makes the member one of a TLS cluster.
	Cluster *Cluster
}

// Member is a running embedded etcd.
type Member struct {
	e   *embed.Etcd
	cfg Config
}

// Start starts the member and waits until it serves.
func Start(ctx context.Context, cfg Config) (*Member, error) {
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("create etcd dir: %w", err)
	}
	ec := embed.NewConfig()
	ec.Name = cfg.Name
	ec.Dir = cfg.Dir
	ec.LogLevel = "error"
	clientURL, err := url.Parse(cfg.ClientURL)
	if err != nil {
		return nil, fmt.Errorf("etcd client URL %q: %w", cfg.ClientURL, err)
	}
	peerURL, err := url.Parse(cfg.PeerURL)
	if err != nil {
		return nil, fmt.Errorf("etcd peer URL %q: %w", cfg.PeerURL, err)
	}
	ec.ListenClientUrls, ec.AdvertiseClientUrls = []url.URL{*clientURL}, []url.URL{*clientURL}
	ec.ListenPeerUrls, ec.AdvertisePeerUrls = []url.URL{*peerURL}, []url.URL{*peerURL}
	ec.InitialCluster = ec.InitialClusterFromName(cfg.Name)
	ec.AutoCompactionMode = "periodic"
	ec.AutoCompactionRetention = "5m"
	timeout := startTimeout
	if cfg.Cluster != nil {
		if err := cfg.Cluster.apply(ec, cfg.Name); err != nil {
			return nil, err
		}
		timeout = clusterStartTimeout
	}
	e, err := embed.StartEtcd(ec)
	if err != nil {
		return nil, fmt.Errorf("start embedded etcd in %s: %w", cfg.Dir, err)
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	peerErr := make(chan error, 1)
	if cfg.Cluster != nil {
		go func() { peerErr <- cfg.Cluster.watchPeers(ctx, cfg.Name) }()
		slog.Info("embedded etcd member waiting for its cluster", "name", cfg.Name, "peers", cfg.Cluster.InitialCluster, "state", cfg.Cluster.State)
	}
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		e.Close()
		return nil, fmt.Errorf("embedded etcd failed: %w", err)
	case err := <-peerErr:
		e.Close()
		return nil, err
	case <-ctx.Done():
		e.Close()
		return nil, fmt.Errorf("embedded etcd %s not ready after %s (does a quorum of its peers run?): %w", cfg.Name, timeout, ctx.Err())
	}
	slog.Info("embedded etcd ready", "name", cfg.Name, "dir", cfg.Dir, "client", cfg.ClientURL)
	return &Member{e: e, cfg: cfg}, nil
}

// ClientURL is where clients reach the member.
func (m *Member) ClientURL() string { return m.cfg.ClientURL }

// Close stops the member.
func (m *Member) Close() { m.e.Close() }
