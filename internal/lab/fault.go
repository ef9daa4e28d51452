package lab

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"syscall"
	"time"
)

// KillNode is a power loss of a node: SIGKILL to every process in its namespace (its agent and
// every QEMU the agent started). Heal restarts the agent; the VMs are the agent's business.
func KillNode(s *State, node string, out io.Writer) error {
	n, err := s.Node(node)
	if err != nil {
		return err
	}
	killed, err := killNamespace(n.Namespace)
	if err != nil {
		return fmt.Errorf("kill node %s: %w", node, err)
	}
	stamp(out, "kill-node %s: SIGKILLed %s", node, killed)
	return nil
}

// StopAgent stops a node's agent only (SIGTERM, then SIGKILL after 10 s); its QEMUs keep running.
func StopAgent(s *State, node string, out io.Writer) error {
	n, err := s.Node(node)
	if err != nil {
		return err
	}
	if !n.Agent.Alive() {
		stamp(out, "stop-agent %s: the agent is not running", node)
		return nil
	}
	pid := n.Agent.PID
	_ = syscall.Kill(pid, syscall.SIGTERM)
	deadline := time.Now().Add(10 * time.Second)
	for n.Agent.Alive() && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	how := "SIGTERM"
	if n.Agent.Alive() {
		if err := killAndWait([]int{pid}); err != nil {
			return fmt.Errorf("stop the agent of %s: %w", node, err)
		}
		how = "SIGKILL after 10s"
	}
	stamp(out, "stop-agent %s: agent %d stopped (%s); its QEMUs keep running", node, pid, how)
	return nil
}

// PartitionNode cuts a node's underlay link (the bridge port goes down); its processes keep
// running, unable to reach anything.
func PartitionNode(s *State, node string, out io.Writer) error {
	n, err := s.Node(node)
	if err != nil {
		return err
	}
	if err := partition(s, n.Namespace); err != nil {
		return err
	}
	stamp(out, "partition-node %s: underlay port %s down (%s cut off; processes keep running)", node, portName(n.Namespace), n.Address)
	return nil
}

// KillDC is the loss of a whole datacenter: SIGKILL to every process of its control namespace
// (server and etcd member, Ceph monitor, OSD, mgr) and of its node namespaces (agents, QEMUs).
func KillDC(s *State, dc string, out io.Writer) error {
	d, err := s.DC(dc)
	if err != nil {
		return err
	}
	var all []int
	for _, ns := range s.namespacesOf(d) {
		pids, err := pidsIn(ns)
		if err != nil {
			return fmt.Errorf("kill datacenter %s: %w", dc, err)
		}
		all = append(all, pids...)
	}
	killed := describe(all)
	if err := killAndWait(all); err != nil {
		return fmt.Errorf("kill datacenter %s: %w", dc, err)
	}
	stamp(out, "kill-dc %s: SIGKILLed %s", dc, killed)
	return nil
}

// PartitionDC cuts the underlay links of a datacenter's control and node namespaces.
func PartitionDC(s *State, dc string, out io.Writer) error {
	d, err := s.DC(dc)
	if err != nil {
		return err
	}
	nss := s.namespacesOf(d)
	for _, ns := range nss {
		if err := partition(s, ns); err != nil {
			return err
		}
	}
	stamp(out, "partition-dc %s: underlay ports of %v down", dc, nss)
	return nil
}

// Heal undoes every fault: all underlay links up, every recorded process that is not running
// (servers, Ceph daemons, agents) started again with its data, in that order.
func Heal(ctx context.Context, s *State, out io.Writer) error {
	var errs []error
	for _, ns := range s.Namespaces {
		if ns == UnderlayNamespace {
			continue
		}
		if err := setLink(ns, true); err != nil {
			errs = append(errs, err)
		}
	}
	if len(s.PartitionedNow) > 0 {
		stamp(out, "heal: underlay ports of %v up", s.PartitionedNow)
	}
	s.PartitionedNow = nil
	restart := func(p *Process) {
		if p == nil || p.Alive() {
			return
		}
		sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		if err := start(sctx, p); err != nil {
			errs = append(errs, err)
			return
		}
		stamp(out, "heal: started %s in %s (pid %d)", p.Name, p.Namespace, p.PID)
	}
	for i := range s.Datacenters {
		for j := range s.Datacenters[i].Ceph {
			if p := &s.Datacenters[i].Ceph[j]; strings.HasPrefix(p.Name, "ceph-mon") {
				restart(p)
			}
		}
	}
	for i := range s.Datacenters {
		restart(s.Datacenters[i].Server)
		for j := range s.Datacenters[i].Ceph {
			restart(&s.Datacenters[i].Ceph[j])
		}
	}
	for i := range s.Nodes {
		restart(s.Nodes[i].Agent)
	}
	if err := s.Save(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func partition(s *State, ns string) error {
	if err := setLink(ns, false); err != nil {
		return err
	}
	if !slices.Contains(s.PartitionedNow, ns) {
		s.PartitionedNow = append(s.PartitionedNow, ns)
	}
	return s.Save()
}

// namespacesOf lists a datacenter's control namespace and its nodes' namespaces.
func (s *State) namespacesOf(d *Datacenter) []string {
	nss := []string{d.Namespace}
	for _, n := range s.Nodes {
		if n.Datacenter == d.Name {
			nss = append(nss, n.Namespace)
		}
	}
	return nss
}

// killNamespace SIGKILLs every process in the namespace, waits until they are gone and says
// which they were.
func killNamespace(ns string) (string, error) {
	pids, err := pidsIn(ns)
	if err != nil {
		return "", err
	}
	desc := describe(pids) // before they die: it reads their names
	return desc, killAndWait(pids)
}
