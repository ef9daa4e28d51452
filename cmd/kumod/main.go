// Command kumod is Kumo's daemon. Roles: server (API, controllers, scheduler, embedded etcd
// unless --etcd-endpoints is given) and all-in-one (everything on one machine).
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
	"k8s.io/klog/v2"

	"kumo.dev/kumo/internal/daemon"
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
	cmd.AddCommand(serverCmd("server", "Run the API server and controllers", "0.0.0.0"))
	cmd.AddCommand(serverCmd("all-in-one", "Run every role of Kumo on this machine", "127.0.0.1"))
	return cmd
}

func serverCmd(use, short, defaultBind string) *cobra.Command {
	o := daemon.ServerOptions{}
	cmd := &cobra.Command{
		Use:   use,
		Short: short,
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return daemon.RunServer(ctx, o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.DataDir, "data-dir", "/var/lib/kumo", "directory for etcd data, certificates and admin.kubeconfig")
	f.StringVar(&o.BindAddress, "bind-address", defaultBind, "address the HTTPS API listens on")
	f.IntVar(&o.Port, "port", 6443, "port the HTTPS API listens on")
	f.StringVar(&o.AdvertiseAddress, "advertise-address", "", "address clients reach the API at (default: the bind address, or the first non-loopback address)")
	f.StringSliceVar(&o.ExtraSANs, "tls-san", nil, "extra DNS names or IPs for the serving certificate")
	f.StringSliceVar(&o.EtcdEndpoints, "etcd-endpoints", nil, "client URLs of an external etcd cluster (default: embedded etcd)")
	f.IntVar(&o.EtcdClientPort, "etcd-client-port", 2379, "loopback client port of the embedded etcd")
	f.IntVar(&o.EtcdPeerPort, "etcd-peer-port", 2380, "loopback peer port of the embedded etcd")
	return cmd
}
