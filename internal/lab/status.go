package lab

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"
)

// Print says where everything of the lab is.
func (s *State) Print(out io.Writer) {
	fmt.Fprintf(out, "\nKumo lab in %s", s.Dir)
	if s.UpDuration != "" {
		fmt.Fprintf(out, " (up in %s)", s.UpDuration)
	}
	fmt.Fprintln(out)
	fmt.Fprintf(out, "  kubeconfig   %s   (kumo --kubeconfig $(bin/kumo-lab kubeconfig) get nodes)\n", s.Kubeconfig)
	cp := "one server (kumod without --etcd-initial-cluster)"
	if s.ReplicatedCP {
		cp = "one server and etcd member per datacenter, leader-elected controllers"
	}
	fmt.Fprintf(out, "  servers      %s: %s\n", cp, strings.Join(s.ServerURLs(), " "))
	fmt.Fprintf(out, "  underlay     %s, bridge %s in namespace %s; host %s on %s\n", s.Subnet, underlayBridge, UnderlayNamespace, s.HostAddress, HostLink)
	fmt.Fprintf(out, "  internet     namespace %s, %s on %s (bridge %s; nothing routes to it yet)\n", InternetNamespace, s.InternetAddr, s.External, externalBridge)
	if s.CephConf != "" {
		fmt.Fprintf(out, "  ceph         %s (ceph -c %s status); user kumo, pool kumo\n", s.CephConf, s.CephConf)
	}
	fmt.Fprintf(out, "  logs         %s, %s\n", filepath.Join(s.Dir, "logs"), filepath.Join(s.CephDir, "log"))
	tw := tabwriter.NewWriter(out, 2, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "  DATACENTER\tNAMESPACE\tADDRESS\tRUNS")
	for _, dc := range s.Datacenters {
		var runs []string
		if dc.Server != nil {
			runs = append(runs, "server "+dc.URL)
		}
		for _, c := range dc.Ceph {
			runs = append(runs, strings.TrimPrefix(c.Name, "ceph-"))
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", dc.Name, dc.Namespace, dc.Address, strings.Join(runs, ", "))
		for _, n := range s.Nodes {
			if n.Datacenter == dc.Name {
				fmt.Fprintf(tw, "    %s\t%s\t%s\tagent (data %s)\n", n.Name, n.Namespace, n.Address, n.DataDir)
			}
		}
	}
	tw.Flush()
	fmt.Fprintf(out, "  exec         bin/kumo-lab exec dc1-n1|dc1|internet -- CMD...\n")
}

// Status prints which of the lab's processes run, whether each server answers, the nodes'
// readiness and Ceph's health.
func (s *State) Status(ctx context.Context, out io.Writer) {
	tw := tabwriter.NewWriter(out, 2, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "COMPONENT\tNAMESPACE\tPID\tSTATE")
	for _, p := range s.processes() {
		state := "running"
		if !p.Alive() {
			state = "STOPPED"
		}
		if slices.Contains(s.PartitionedNow, p.Namespace) {
			state += ", PARTITIONED"
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\n", p.Name, p.Namespace, p.PID, state)
	}
	tw.Flush()
	for _, dc := range s.Datacenters {
		if dc.Server == nil {
			continue
		}
		if err := Readyz(ctx, s.Kubeconfig, dc.URL); err != nil {
			fmt.Fprintf(out, "server %s: not answering: %v\n", dc.URL, err)
		} else {
			fmt.Fprintf(out, "server %s: ready\n", dc.URL)
		}
	}
	if nodes, err := s.ListNodes(ctx); err != nil {
		fmt.Fprintf(out, "nodes: %v\n", err)
	} else {
		for _, n := range nodes {
			fmt.Fprintf(out, "node %s (%s): Ready=%v\n", n.Name, n.Spec.Datacenter, NodeReady(&n))
		}
	}
	if s.CephConf != "" {
		if h, err := s.CephStatus(ctx); err != nil {
			fmt.Fprintf(out, "ceph: %v\n", err)
		} else {
			fmt.Fprintf(out, "ceph: %s %v, mons in quorum %v, OSDs up %d/in %d, PGs active+clean %d/%d\n",
				h.Status, h.Checks, h.Quorum, h.OSDsUp, h.OSDsIn, h.PGsClean, h.PGsTotal)
		}
	}
}
