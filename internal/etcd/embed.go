// Package etcd runs the embedded etcd member the server stores its objects in when no external
// cluster is given.
package etcd

import (
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
)

// startTimeout bounds how long the member may take to become ready.
const startTimeout = 60 * time.Second

// Config places the member.
type Config struct {
	// Dir holds the member's data.
	Dir string
	// ClientURL and PeerURL are where it listens (loopback by default).
	ClientURL, PeerURL string
	// Name of the member.
	Name string
}

// Member is a running embedded etcd.
type Member struct {
	e   *embed.Etcd
	cfg Config
}

// Start starts the member and waits until it serves.
func Start(cfg Config) (*Member, error) {
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
	e, err := embed.StartEtcd(ec)
	if err != nil {
		return nil, fmt.Errorf("start embedded etcd in %s: %w", cfg.Dir, err)
	}
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		e.Close()
		return nil, fmt.Errorf("embedded etcd failed: %w", err)
	case <-time.After(startTimeout):
		e.Close()
		return nil, fmt.Errorf("embedded etcd not ready after %s", startTimeout)
	}
	slog.Info("embedded etcd ready", "dir", cfg.Dir, "client", cfg.ClientURL)
	return &Member{e: e, cfg: cfg}, nil
}

// ClientURL is where clients reach the member.
func (m *Member) ClientURL() string { return m.cfg.ClientURL }

// Close stops the member.
func (m *Member) Close() { m.e.Close() }
