// Package daemon runs kumod's roles: the server (API, controllers, embedded etcd unless an
// external cluster is given) and, in all-in-one, everything a single machine needs. It is where
// the roles are wired: which controllers run beside the API (controllers.go), which agent runs
// beside the server.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"kumo.dev/kumo/internal/agent"
	"kumo.dev/kumo/internal/apiserver"
	"kumo.dev/kumo/internal/auth"
	"kumo.dev/kumo/internal/etcd"
	"kumo.dev/kumo/internal/pki"
)

// ServerOptions configure the server role.
type ServerOptions struct {
	DataDir          string
	BindAddress      string
	Port             int
	AdvertiseAddress string
	ExtraSANs        []string
	// EtcdEndpoints, when set, name an external etcd cluster; otherwise an embedded member runs
	// under DataDir/etcd on EtcdClientPort and EtcdPeerPort (loopback).
	EtcdEndpoints  []string
	EtcdClientPort int
	EtcdPeerPort   int
	// EtcdName names the embedded member (and this server in leader election); "kumo" by default.
	EtcdName string
	// EtcdAdvertiseAddress, when set, makes the embedded member one of a cluster (cluster.go):
	// it listens on this IP, over TLS with certificates from the cluster CA, for clients on
	// EtcdClientPort and peers on EtcdPeerPort.
	EtcdAdvertiseAddress string
	// EtcdInitialCluster (name=https://IP:PORT,...) and EtcdInitialClusterState (new|existing)
	// are etcd's bootstrap settings.
	EtcdInitialCluster, EtcdInitialClusterState string
	// EtcdHeartbeatInterval and EtcdElectionTimeout are raft's timings (etcd's defaults if zero).
	EtcdHeartbeatInterval, EtcdElectionTimeout time.Duration
	// APIServers are every API server URL of the cluster, written into the kubeconfigs this
	// server issues (its own URL first); empty: its own alone.
	APIServers []string
	// LeaderElection decides which server runs the controllers.
	LeaderElection LeaderElection
}

// AdminKubeconfig is where the server writes the administrator's kubeconfig.
func (o ServerOptions) AdminKubeconfig() string { return filepath.Join(o.DataDir, "admin.kubeconfig") }

// RunServer runs the server until ctx ends.
func RunServer(ctx context.Context, o ServerOptions) error {
	return runServer(ctx, o, nil)
}

// RunAllInOne runs the server and a node agent in one process: the agent gets a node
// kubeconfig issued by the server and keeps its VMs under the same data directory.
func RunAllInOne(ctx context.Context, o ServerOptions, ao agent.Options) error {
	return runServer(ctx, o, func(ctx context.Context, srv *apiserver.Server, servers []string) error {
		ao.DataDir = o.DataDir
		ao.Kubeconfig = filepath.Join(o.DataDir, "node.kubeconfig")
		if err := srv.IssueNodeKubeconfig(ctx, ao.Kubeconfig, servers, ao.Node, ao.Datacenter); err != nil {
			return fmt.Errorf("node kubeconfig: %w", err)
		}
		if err := waitReady(ctx, ao.Kubeconfig); err != nil {
			return err
		}
		return RunAgent(ctx, ao)
	})
}

func runServer(ctx context.Context, o ServerOptions, withAgent func(context.Context, *apiserver.Server, []string) error) error {
	if err := os.MkdirAll(o.DataDir, 0o700); err != nil {
		return fmt.Errorf("create data dir %s: %w", o.DataDir, err)
	}
	bind := net.ParseIP(o.BindAddress)
	if bind == nil {
		return fmt.Errorf("--bind-address %q is not an IP address", o.BindAddress)
	}
	advertise := o.AdvertiseAddress
	if advertise == "" {
		advertise = defaultAdvertise(bind)
	}
	if err := o.validate(); err != nil {
		return err
	}
	pkiDir := filepath.Join(o.DataDir, "pki")
	endpoints := o.EtcdEndpoints
	var etcdTLS *apiserver.EtcdTLS
	switch {
	case o.EtcdAdvertiseAddress != "":
		member, urls, tlsFiles, err := startClusterMember(ctx, o, pkiDir)
		if err != nil {
			return err
		}
		defer member.Close()
		endpoints, etcdTLS = urls, tlsFiles
	case len(endpoints) == 0:
		member, err := etcd.Start(ctx, etcd.Config{
			Name:      o.EtcdName,
			Dir:       filepath.Join(o.DataDir, "etcd"),
			ClientURL: "http://127.0.0.1:" + strconv.Itoa(o.EtcdClientPort),
			PeerURL:   "http://127.0.0.1:" + strconv.Itoa(o.EtcdPeerPort),
		})
		if err != nil {
			return err
		}
		defer member.Close()
		endpoints = []string{member.ClientURL()}
	}
	cfg := apiserver.Config{
		PKIDir:           pkiDir,
		BindAddress:      bind,
		Port:             o.Port,
		AdvertiseAddress: advertise,
		ExtraSANs:        o.ExtraSANs,
		EtcdServers:      endpoints,
		EtcdTLS:          etcdTLS,
	}
	srv, err := apiserver.New(cfg)
	if err != nil {
		return err
	}
	if err := checkClusterPKI(ctx, endpoints, etcdTLS, pkiDir); err != nil {
		return err
	}
	identity := o.identity(cfg.URL())
	if o.LeaderElection.Enabled {
		err = srv.OnStarted("kumo-leader-election", func(ctx context.Context, loopback *rest.Config) error {
			return runLeaderElection(ctx, loopback, identity, o.LeaderElection, startControllers)
		})
	} else {
		err = srv.OnStarted("kumo-controllers", startControllers)
	}
	if err != nil {
		return err
	}
	servers := o.servers(cfg.URL())
	if err := writeAdminKubeconfig(o.AdminKubeconfig(), servers, srv.CA); err != nil {
		return err
	}
	slog.Info("kumo API server starting", "url", cfg.URL(), "servers", servers, "identity", identity, "kubeconfig", o.AdminKubeconfig(), "etcd", endpoints)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	agentErr := make(chan error, 1)
	if withAgent != nil {
		go func() {
			err := withAgent(ctx, srv, servers)
			if err != nil && ctx.Err() == nil {
				slog.Error("node agent stopped", "err", err)
				agentErr <- err
				cancel()
			}
		}()
	}
	if err := srv.Run(ctx); err != nil && !errors.Is(err, context.Canceled) {
		return fmt.Errorf("API server: %w", err)
	}
	select {
	case err := <-agentErr:
		return fmt.Errorf("node agent: %w", err)
	default:
	}
	return nil
}

// writeAdminKubeconfig issues an admin client certificate and writes a kubeconfig with it
// (mode 0600) for servers.
func writeAdminKubeconfig(path string, servers []string, ca *pki.CA) error {
	pair, err := ca.Issue(auth.AdminUser, []string{"system:masters", auth.GroupAdmins}, nil, nil, false)
	if err != nil {
		return err
	}
	data, err := pki.KubeconfigServers("kumo", servers, ca.CertPEM, auth.AdminUser, pki.Credentials{ClientCertPEM: pair.CertPEM, ClientKeyPEM: pair.KeyPEM}, "")
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return os.Rename(tmp, path)
}

// defaultAdvertise picks the address clients use: loopback when bound there, else the first
// non-loopback address of the machine.
func defaultAdvertise(bind net.IP) string {
	if !bind.IsUnspecified() {
		return bind.String()
	}
	addrs, _ := net.InterfaceAddrs()
	for _, a := range addrs {
		if ipn, ok := a.(*net.IPNet); ok && !ipn.IP.IsLoopback() && ipn.IP.To4() != nil {
			return ipn.IP.String()
		}
	}
	return "127.0.0.1"
}

// waitReady waits until the API server answers /readyz to the given credentials.
func waitReady(ctx context.Context, kubeconfig string) error {
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return err
	}
	hc, err := rest.HTTPClientFor(cfg)
	if err != nil {
		return err
	}
	hc.Timeout = 2 * time.Second
	for {
		if resp, err := hc.Get(cfg.Host + "/readyz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}
