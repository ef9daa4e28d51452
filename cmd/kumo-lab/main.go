// Command kumo-lab runs a Kumo cluster of several datacenters on one machine (network
// namespaces, one server per datacenter, agents, Ceph) and injects faults into it. See
// internal/lab.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"kumo.dev/kumo/internal/lab"
)

func main() {
	if err := root().ExecuteContext(context.Background()); err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			os.Exit(ee.ExitCode())
		}
		fmt.Fprintln(os.Stderr, "kumo-lab:", err)
		os.Exit(1)
	}
}

func root() *cobra.Command {
	var dir string
	cmd := &cobra.Command{
		Use:           "kumo-lab",
		Short:         "A Kumo cluster of several datacenters on one machine, with fault injection",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	cmd.PersistentFlags().StringVar(&dir, "dir", "_output/lab", "the lab's directory (state.json, data, logs)")
	load := func() (*lab.State, error) { return lab.Load(dir) }

	var cfg lab.Config
	up := &cobra.Command{
		Use:   "up",
		Short: "Build the lab from nothing (after cleaning up a previous one) and print where everything is",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			cfg.Dir = dir
			_, err := lab.Up(ctx, cfg, os.Stdout)
			if err != nil {
				return fmt.Errorf("%w\n(what was started is still there for inspection; kumo-lab down removes it)", err)
			}
			return nil
		},
	}
	f := up.Flags()
	f.IntVar(&cfg.Datacenters, "datacenters", 3, "number of datacenters (1-9)")
	f.IntVar(&cfg.NodesPerDC, "nodes-per-dc", 2, "node namespaces per datacenter (1-9)")
	f.IntVar(&cfg.NodeCPUs, "node-cpus", 4, "vCPUs each node offers")
	f.StringVar(&cfg.NodeMemory, "node-memory", "4Gi", "memory each node offers")
	f.StringVar(&cfg.Subnet, "subnet", lab.DefaultSubnet, "the underlay's IPv4 subnet (must not overlap a host route)")
	f.StringVar(&cfg.External, "external", lab.DefaultExternal, "the internet namespace's segment")
	f.StringVar(&cfg.BinDir, "bin-dir", "", "directory holding kumod and kumo (default: this program's)")
	f.StringVar(&cfg.ImagesDir, "images-dir", "", "golden images for the agents (default $KUMO_IMAGES_DIR or _output/images)")
	f.BoolVar(&cfg.NoCeph, "no-ceph", false, "leave Ceph out (no replicated disks)")
	f.StringVar(&cfg.CephOSDSize, "ceph-osd-size", "3G", "size of each OSD's (sparse) block file")
	f.IntVar(&cfg.LeaseSeconds, "lease-seconds", 3, "leader election lease (renew deadline 2/3, retry 1/6 of it)")

	down := &cobra.Command{
		Use:   "down",
		Short: "Stop every process of the lab and remove its namespaces, links and directory",
		Args:  cobra.NoArgs,
		RunE:  func(*cobra.Command, []string) error { return lab.Down(dir, os.Stdout) },
	}
	status := &cobra.Command{
		Use:   "status",
		Short: "Show the lab's processes, servers, nodes and Ceph health",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			s, err := load()
			if err != nil {
				return err
			}
			s.Print(os.Stdout)
			fmt.Println()
			s.Status(c.Context(), os.Stdout)
			return nil
		},
	}
	kubeconfig := &cobra.Command{
		Use:   "kubeconfig",
		Short: "Print the path of the lab's admin kubeconfig",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			s, err := load()
			if err != nil {
				return err
			}
			fmt.Println(s.Kubeconfig)
			return nil
		},
	}
	execCmd := &cobra.Command{
		Use:   "exec TARGET -- CMD...",
		Short: "Run a command inside a node's namespace (dc1-n1), a datacenter's (dc1), internet or underlay",
		Args:  cobra.MinimumNArgs(2),
		RunE: func(c *cobra.Command, args []string) error {
			s, err := load()
			if err != nil {
				return err
			}
			ns, err := s.NamespaceOf(args[0])
			if err != nil {
				return err
			}
			return lab.ExecIn(ns, args[1:], os.Stdin, os.Stdout, os.Stderr)
		},
	}
	cmd.AddCommand(up, down, status, kubeconfig, execCmd)

	fault := func(use, short string, f func(*lab.State, string) error) *cobra.Command {
		return &cobra.Command{
			Use: use, Short: short, Args: cobra.ExactArgs(1),
			RunE: func(_ *cobra.Command, args []string) error {
				s, err := load()
				if err != nil {
					return err
				}
				return f(s, args[0])
			},
		}
	}
	cmd.AddCommand(
		fault("kill-node NODE", "SIGKILL a node's agent and all its QEMUs (a power loss)",
			func(s *lab.State, n string) error { return lab.KillNode(s, n, os.Stdout) }),
		fault("partition-node NODE", "Cut a node's underlay link; its processes keep running",
			func(s *lab.State, n string) error { return lab.PartitionNode(s, n, os.Stdout) }),
		fault("kill-dc DC", "SIGKILL every process of a datacenter: server and etcd member, Ceph mon and OSD, agents, QEMUs",
			func(s *lab.State, d string) error { return lab.KillDC(s, d, os.Stdout) }),
		fault("partition-dc DC", "Cut the underlay links of a datacenter's control and node namespaces",
			func(s *lab.State, d string) error { return lab.PartitionDC(s, d, os.Stdout) }),
		fault("stop-agent NODE", "Stop a node's agent only; its QEMUs keep running",
			func(s *lab.State, n string) error { return lab.StopAgent(s, n, os.Stdout) }),
		&cobra.Command{
			Use: "heal", Short: "Bring every link up and restart every stopped component with its data",
			Args: cobra.NoArgs,
			RunE: func(c *cobra.Command, _ []string) error {
				s, err := load()
				if err != nil {
					return err
				}
				return lab.Heal(c.Context(), s, os.Stdout)
			},
		},
	)
	return cmd
}
