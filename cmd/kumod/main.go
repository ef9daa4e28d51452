// Command kumod is Kumo's daemon. Roles: server (API, controllers, scheduler, embedded etcd
// unless --etcd-endpoints is given) and all-in-one (everything on one machine).
package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/klog/v2"

	"kumo.dev/kumo/internal/agent"
	"kumo.dev/kumo/internal/apiserver"
	"kumo.dev/kumo/internal/daemon"
	"kumo.dev/kumo/internal/etcd"
	"kumo.dev/kumo/internal/pki"
	"kumo.dev/kumo/internal/storage/importer"
	"kumo.dev/kumo/internal/version"
)

func main() {
	if err := root().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "kumod:", err)
		os.Exit(1)
	}
}

func root() *cobra.Command {
	var logLevel string
	cmd := &cobra.Command{
		Use:           "kumod",
		Short:         "Kumo daemon: API server, controllers and (later) node agent",
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       version.Version + " (" + version.Commit() + ")",
		PersistentPreRunE: func(*cobra.Command, []string) error {
			var lvl slog.Level
			if err := lvl.UnmarshalText([]byte(logLevel)); err != nil {
				return fmt.Errorf("--log-level: %w", err)
			}
			slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lvl})))
			klog.SetSlogLogger(slog.Default())
			return nil
		},
	}
	cmd.PersistentFlags().StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	cmd.AddCommand(serverCmd("server", "Run the API server and controllers", "0.0.0.0", false))
	cmd.AddCommand(serverCmd("all-in-one", "Run every role of Kumo on this machine: server and node agent", "127.0.0.1", true))
	cmd.AddCommand(agentCmd())
	cmd.AddCommand(pkiCmd())
	return cmd
}

func pkiCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "pki", Short: "Manage the secrets the servers of one cluster share"}
	var dataDir string
	initCmd := &cobra.Command{
		Use:   "init",
		Short: "Create DATA-DIR/pki with the secrets every server of a new cluster shares",
		Long: "Create DATA-DIR/pki with the secrets every server of a new cluster shares: the cluster CA (ca.crt, ca.key), " +
			"the token signing key (token.key) and the encryption-at-rest configuration (encryption.yaml).\n\n" +
			"Copy DATA-DIR/pki/* into every server's --data-dir/pki before its first start; each server then makes its own " +
			"serving and etcd certificates from the shared CA. A server whose secrets differ from its peers' refuses to start.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			dir := filepath.Join(dataDir, "pki")
			if err := apiserver.InitClusterPKI(dir); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "created %s (%s): copy its files into every server's DATA-DIR/pki\n", dir, strings.Join(pki.SharedFiles, ", "))
			return nil
		},
	}
	initCmd.Flags().StringVar(&dataDir, "data-dir", "", "directory to create pki/ in")
	_ = initCmd.MarkFlagRequired("data-dir")
	cmd.AddCommand(initCmd)
	return cmd
}

func serverCmd(use, short, defaultBind string, withAgent bool) *cobra.Command {
	o := daemon.ServerOptions{}
	ao := agent.Options{}
	cmd := &cobra.Command{
		Use:   use,
		Short: short,
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			if withAgent {
				return daemon.RunAllInOne(ctx, o, ao)
			}
			return daemon.RunServer(ctx, o)
		},
	}
	f := cmd.Flags()
	if withAgent {
		hostname, _ := os.Hostname()
		addNodeFlags(f, &ao, hostname)
	}
	f.StringVar(&o.DataDir, "data-dir", "/var/lib/kumo", "directory for etcd data, certificates and admin.kubeconfig")
	f.StringVar(&o.BindAddress, "bind-address", defaultBind, "address the HTTPS API listens on")
	f.IntVar(&o.Port, "port", 6443, "port the HTTPS API listens on")
	f.StringVar(&o.AdvertiseAddress, "advertise-address", "", "address clients reach the API at (default: the bind address, or the first non-loopback address)")
	f.StringSliceVar(&o.ExtraSANs, "tls-san", nil, "extra DNS names or IPs for the serving certificate")
	f.StringSliceVar(&o.EtcdEndpoints, "etcd-endpoints", nil, "client URLs of an external etcd cluster (default: embedded etcd)")
	f.IntVar(&o.EtcdClientPort, "etcd-client-port", 2379, "client port of the embedded etcd (on loopback, or on --etcd-advertise-address; the same on every member)")
	f.IntVar(&o.EtcdPeerPort, "etcd-peer-port", 2380, "peer port of the embedded etcd (on loopback, or on --etcd-advertise-address)")
	f.StringVar(&o.EtcdName, "etcd-name", daemon.DefaultEtcdName, "name of the embedded etcd member, and of this server in leader election")
	f.StringVar(&o.EtcdAdvertiseAddress, "etcd-advertise-address", "", "IP the embedded etcd member of a cluster listens on for clients and peers, over TLS from the cluster CA (default: one loopback member, no cluster)")
	f.StringVar(&o.EtcdInitialCluster, "etcd-initial-cluster", "", "every member of the etcd cluster, NAME=https://IP:PEER-PORT,... (this one included)")
	f.StringVar(&o.EtcdInitialClusterState, "etcd-initial-cluster-state", "new", "new (the members start together) or existing (join a running cluster)")
	f.DurationVar(&o.EtcdHeartbeatInterval, "etcd-heartbeat-interval", etcd.DefaultHeartbeatInterval, "raft heartbeat interval of the etcd members (about the round trip between them)")
	f.DurationVar(&o.EtcdElectionTimeout, "etcd-election-timeout", etcd.DefaultElectionTimeout, "raft election timeout of the etcd members (about 10 heartbeats)")
	f.StringSliceVar(&o.APIServers, "api-servers", nil, "every API URL of the cluster (https://HOST:PORT,...); the kubeconfigs this server writes list them all, its own first")
	o.LeaderElection = daemon.DefaultLeaderElection()
	f.BoolVar(&o.LeaderElection.Enabled, "leader-elect", true, "run controllers and scheduler only while this server holds the leader Lease kumo-system/kumo-controllers")
	f.DurationVar(&o.LeaderElection.LeaseDuration, "leader-elect-lease-duration", o.LeaderElection.LeaseDuration, "how long the others wait after the leader's last renewal before taking over")
	f.DurationVar(&o.LeaderElection.RenewDeadline, "leader-elect-renew-deadline", o.LeaderElection.RenewDeadline, "how long the leader retries renewing before it stops its controllers")
	f.DurationVar(&o.LeaderElection.RetryPeriod, "leader-elect-retry-period", o.LeaderElection.RetryPeriod, "how often the leader renews and the others try to acquire")
	return cmd
}

func agentCmd() *cobra.Command {
	o := agent.Options{}
	cmd := &cobra.Command{
		Use:   "agent",
		Short: "Run the node agent: register the node, run its VMs under QEMU, serve their consoles",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return daemon.RunAgent(ctx, o)
		},
	}
	f := cmd.Flags()
	f.StringSliceVar(&o.Servers, "server", nil, "API server URL, repeatable or comma-separated; the agent fails over between them (default: the kubeconfig's list)")
	f.StringVar(&o.Kubeconfig, "kubeconfig", "", "the node's credentials (default DATA-DIR/node.kubeconfig; kumo node kubeconfig NAME makes one)")
	f.StringVar(&o.DataDir, "data-dir", "/var/lib/kumo-agent", "directory for run directories, disks and logs")
	addNodeFlags(f, &o, "")
	return cmd
}

func addNodeFlags(f *pflag.FlagSet, o *agent.Options, defaultNode string) {
	f.StringVar(&o.Node, "node", defaultNode, "name of this node")
	f.StringVar(&o.Datacenter, "datacenter", "dc1", "datacenter this node sits in")
	f.StringVar(&o.ImagesDir, "images-dir", "", "directory of operator-provided golden images <name>.qcow2, read only (default DATA-DIR/images; make images fills _output/images); GoldenImage objects are cached under DATA-DIR/golden")
	f.StringVar(&o.Accel, "accel", "auto", "accelerator: auto (KVM if a probe guest really runs, else TCG), kvm or tcg")
	f.StringVar(&o.QEMU, "qemu", "qemu-system-x86_64", "QEMU binary")
	f.Int64Var(&o.CPUs, "cpus", 0, "vCPUs this node offers before the reserve (default: the machine's)")
	f.Var(quantityFlag{&o.Memory}, "memory", "memory this node offers before the reserve, e.g. 16Gi (default: the machine's)")
	f.Int64Var(&o.ReserveCPUs, "reserve-cpus", 0, "vCPUs kept for the host")
	o.ReserveMemory = resource.MustParse("512Mi")
	f.Var(quantityFlag{&o.ReserveMemory}, "reserve-memory", "memory kept for the host")
	f.StringVar(&o.ListenAddress, "stream-listen", "127.0.0.1:0", "address of the agent's console/VNC stream server")
	f.StringVar(&o.AdvertiseAddress, "stream-advertise", "", "address the API server dials for streams (default: the listen host)")
	f.StringVar(&o.CephConf, "ceph-conf", "", "ceph.conf of the cluster holding replicated disks (empty: this node has no replicated class)")
	f.StringVar(&o.CephUser, "ceph-user", "kumo", "cephx user of the replicated class (its keyring is found through ceph.conf)")
	f.StringVar(&o.CephPool, "ceph-pool", "kumo", "RBD pool of the replicated class")
	f.Var(networksFlag{&o.ImportAllowedNetworks}, "import-allowed-networks",
		"CIDRs tenant disk imports (source.http) may reach although internal: loopback, private, link-local, CGNAT, multicast, this host's and the API server's addresses are refused otherwise (default none)")
	f.Var(networksFlag{&o.ImageImportAllowedNetworks}, "image-import-allowed-networks",
		"CIDRs golden-image imports may reach although internal (same rules as --import-allowed-networks; default none)")
}

// networksFlag parses a comma-separated list of CIDRs (a bare address is one host).
type networksFlag struct{ p *[]netip.Prefix }

func (f networksFlag) String() string {
	if f.p == nil {
		return ""
	}
	s := make([]string, len(*f.p))
	for i, p := range *f.p {
		s[i] = p.String()
	}
	return strings.Join(s, ",")
}
func (f networksFlag) Set(v string) error {
	p, err := importer.ParseNetworks(strings.Split(v, ","))
	if err != nil {
		return err
	}
	*f.p = append(*f.p, p...)
	return nil
}
func (f networksFlag) Type() string { return "CIDRs" }

// quantityFlag parses Kubernetes quantities such as 16Gi.
type quantityFlag struct{ q *resource.Quantity }

func (f quantityFlag) String() string {
	if f.q == nil {
		return ""
	}
	return f.q.String()
}
func (f quantityFlag) Set(s string) error {
	q, err := resource.ParseQuantity(s)
	if err != nil {
		return err
	}
	*f.q = q
	return nil
}
func (f quantityFlag) Type() string { return "quantity" }
