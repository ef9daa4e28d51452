package daemon

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"kumo.dev/kumo/internal/apiserver"
	"kumo.dev/kumo/internal/etcd"
	"kumo.dev/kumo/internal/pki"
)

// pkiFingerprintKey is where etcd keeps the fingerprint of the shared pki of the first server
// that used it (outside the API's /registry prefix).
const pkiFingerprintKey = "/kumo/cluster/pki-fingerprint"

// pkiCheckTimeout bounds the fingerprint check (etcd may still be electing its leader).
const pkiCheckTimeout = 30 * time.Second

// DefaultEtcdName is the embedded member's name when none is given.
const DefaultEtcdName = "kumo"

func (o ServerOptions) validate() error {
	if o.EtcdName == "" {
		return errors.New("--etcd-name must not be empty")
	}
	if err := o.LeaderElection.Validate(); err != nil {
		return err
	}
	if o.EtcdAdvertiseAddress == "" {
		if o.EtcdInitialCluster != "" {
			return errors.New("--etcd-initial-cluster needs --etcd-advertise-address (the member's IP)")
		}
		return nil
	}
	if len(o.EtcdEndpoints) > 0 {
		return errors.New("--etcd-endpoints (an external etcd) and --etcd-advertise-address (an embedded member of a cluster) exclude each other")
	}
	if net.ParseIP(o.EtcdAdvertiseAddress) == nil {
		return fmt.Errorf("--etcd-advertise-address %q is not an IP address", o.EtcdAdvertiseAddress)
	}
	for _, s := range o.APIServers {
		if u, err := url.Parse(s); err != nil || u.Scheme != "https" || u.Host == "" {
			return fmt.Errorf("--api-servers: %q is not https://HOST:PORT", s)
		}
	}
	return nil
}

// identity is this server's name in leader election: its etcd member name when it is one of a
// cluster (unique by etcd's rules), else the host name and API URL.
func (o ServerOptions) identity(url string) string {
	if o.EtcdAdvertiseAddress != "" {
		return o.EtcdName
	}
	host, _ := os.Hostname()
	return host + "_" + url
}

// servers is the list of API URLs this server's kubeconfigs name: its own first, then the
// others of --api-servers.
func (o ServerOptions) servers(own string) []string {
	out := []string{own}
	for _, s := range o.APIServers {
		if s != own {
			out = append(out, s)
		}
	}
	return out
}

// startClusterMember starts this server's etcd member of a TLS cluster and returns the client
// URLs of every member (its own first) and the API server's TLS files.
func startClusterMember(ctx context.Context, o ServerOptions, pkiDir string) (*etcd.Member, []string, *apiserver.EtcdTLS, error) {
	if missing := pki.MissingShared(pkiDir); len(missing) > 0 {
		return nil, nil, nil, fmt.Errorf("%s lacks %v: the servers of a cluster share the secrets made by `kumod pki init --data-dir DIR`; copy DIR/pki/* into every server's DATA-DIR/pki before its first start", pkiDir, missing)
	}
	ca, err := pki.LoadCA(pkiDir)
	if err != nil {
		return nil, nil, nil, err
	}
	ip := net.ParseIP(o.EtcdAdvertiseAddress)
	certs, err := ca.EnsureEtcdCerts(pkiDir, []net.IP{ip})
	if err != nil {
		return nil, nil, nil, err
	}
	peers, err := etcd.ParseInitialCluster(o.EtcdInitialCluster)
	if err != nil {
		return nil, nil, nil, err
	}
	state := o.EtcdInitialClusterState
	if state == "" {
		state = "new"
	}
	member, err := etcd.Start(ctx, etcd.Config{
		Name:      o.EtcdName,
		Dir:       filepath.Join(o.DataDir, "etcd"),
		ClientURL: "https://" + net.JoinHostPort(ip.String(), strconv.Itoa(o.EtcdClientPort)),
		PeerURL:   "https://" + net.JoinHostPort(ip.String(), strconv.Itoa(o.EtcdPeerPort)),
		Cluster: &etcd.Cluster{
			CAFile: certs.CAFile, CertFile: certs.MemberCertFile, KeyFile: certs.MemberKeyFile,
			AllowedCN:      pki.EtcdCN,
			InitialCluster: peers, State: state,
			HeartbeatInterval: o.EtcdHeartbeatInterval, ElectionTimeout: o.EtcdElectionTimeout,
		},
	})
	if err != nil {
		return nil, nil, nil, fmt.Errorf("etcd member %s (CA fingerprint %s): %w", o.EtcdName, ca.CAFingerprint(), err)
	}
	urls := etcd.ClientURLs(peers, o.EtcdName, o.EtcdClientPort)
	return member, urls, &apiserver.EtcdTLS{CAFile: certs.CAFile, CertFile: certs.ClientCertFile, KeyFile: certs.ClientKeyFile}, nil
}

// checkClusterPKI compares this server's shared pki with the one the cluster's first server
// recorded in etcd (recording it if none is): a server with another token key or encryption key
// would reject the others' tokens and fail to read tenant keys, so it refuses to start instead.
func checkClusterPKI(ctx context.Context, endpoints []string, files *apiserver.EtcdTLS, pkiDir string) error {
	fp, err := pki.Fingerprint(pkiDir)
	if err != nil {
		return err
	}
	var tlsCfg *tls.Config
	if files != nil {
		info := transport.TLSInfo{CertFile: files.CertFile, KeyFile: files.KeyFile, TrustedCAFile: files.CAFile}
		if tlsCfg, err = info.ClientConfig(); err != nil {
			return fmt.Errorf("etcd client TLS: %w", err)
		}
	}
	ctx, cancel := context.WithTimeout(ctx, pkiCheckTimeout)
	defer cancel()
	c, err := clientv3.New(clientv3.Config{Endpoints: endpoints, TLS: tlsCfg, DialTimeout: 5 * time.Second, Context: ctx, Logger: zap.NewNop()})
	if err != nil {
		return fmt.Errorf("connect to etcd %v to check the cluster's pki: %w", endpoints, err)
	}
	defer c.Close()
	resp, err := c.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(pkiFingerprintKey), "=", 0)).
		Then(clientv3.OpPut(pkiFingerprintKey, fp)).
		Else(clientv3.OpGet(pkiFingerprintKey)).
		Commit()
	if err != nil {
		return fmt.Errorf("check the cluster's pki fingerprint in etcd %v: %w", endpoints, err)
	}
	if resp.Succeeded {
		slog.Info("recorded this cluster's pki fingerprint", "fingerprint", fp)
		return nil
	}
	kvs := resp.Responses[0].GetResponseRange().Kvs
	if len(kvs) == 1 && string(kvs[0].Value) != fp {
		return fmt.Errorf("%s holds other secrets than the servers this cluster was started with (fingerprint %s, cluster's %s): every server must use the files of one `kumod pki init` (%v)", pkiDir, fp, kvs[0].Value, pki.SharedFiles)
	}
	return nil
}
