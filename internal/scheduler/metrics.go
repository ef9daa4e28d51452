package scheduler

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"kumo.dev/kumo/internal/metrics"
	apps "kumo.dev/kumo/pkg/apis/apps/v1alpha1"
)

// waitingSince is when the scheduler first saw a VM's incarnation wait for a node.
type waitingSince struct {
	incarnation int64
	since       time.Time
}

// noteWaiting remembers when the VM (at its current incarnation) was first seen waiting.
func (ctl *Controller) noteWaiting(key string, vm *apps.VMInstance) {
	ctl.mu.Lock()
	defer ctl.mu.Unlock()
	if w, ok := ctl.waiting[key]; ok && w.incarnation == vm.Status.Incarnation {
		return
	}
	ctl.waiting[key] = waitingSince{incarnation: vm.Status.Incarnation, since: time.Now()}
}

// noteBound observes how long the VM waited before incarnation prev+1 was bound.
func (ctl *Controller) noteBound(key string, prev int64) {
	ctl.mu.Lock()
	w, ok := ctl.waiting[key]
	delete(ctl.waiting, key)
	ctl.mu.Unlock()
	if ok && w.incarnation == prev {
		metrics.SchedulingPending.Observe(time.Since(w.since).Seconds())
	}
}

// synced says whether every cache the scheduler reads has been filled.
func (inf Informers) synced() bool {
	return inf.VMs.HasSynced() && inf.Nodes.HasSynced() && inf.Types.HasSynced() && inf.Disks.HasSynced()
}

// Per-node metrics, as the scheduler counts them (its own bindings not yet seen in the watch
// included).
var (
	nodeLabels         = []string{"node", "datacenter"}
	descAllocatableCPU = prometheus.NewDesc("kumo_node_allocatable_cpus", "vCPUs the node offers to VMs (after its reserve).", nodeLabels, nil)
	descAllocatableMem = prometheus.NewDesc("kumo_node_allocatable_memory_bytes", "Memory the node offers to VMs (after its reserve), in bytes.", nodeLabels, nil)
	descBoundCPU       = prometheus.NewDesc("kumo_node_bound_cpus", "vCPUs of the VMs bound to the node (guaranteed, never more than allocatable).", nodeLabels, nil)
	descBoundMem       = prometheus.NewDesc("kumo_node_bound_memory_bytes", "Memory of the VMs bound to the node, in bytes.", nodeLabels, nil)
	descNodeReady      = prometheus.NewDesc("kumo_node_ready", "1 when the node's agent is Ready and its heartbeat fresh, else 0.", nodeLabels, nil)
	descNodeVMs        = prometheus.NewDesc("kumo_node_vms", "VMs bound to the node.", nodeLabels, nil)
	descPhaseCount     = prometheus.NewDesc("kubevirt_vmi_phase_count", "VMs by node and phase (node \"\" for VMs bound to none).", []string{"node", "phase"}, nil)
)

// Collector reports every node's allocatable and bound resources and the VMs by node and
// phase, from the scheduler's caches; nothing until they are synced (or on a server whose
// scheduler does not run).
func (ctl *Controller) Collector() prometheus.Collector { return (*nodeCollector)(ctl) }

type nodeCollector Controller

func (c *nodeCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descAllocatableCPU, descAllocatableMem, descBoundCPU, descBoundMem, descNodeReady, descNodeVMs, descPhaseCount} {
		ch <- d
	}
}

func (c *nodeCollector) Collect(ch chan<- prometheus.Metric) {
	ctl := (*Controller)(c)
	if !ctl.cachesSynced() {
		return
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	for _, n := range ctl.nodes() {
		ready := 0.0
		if n.Ready {
			ready = 1
		}
		gauge(descAllocatableCPU, float64(n.Allocatable.CPUs), n.Name, n.Datacenter)
		gauge(descAllocatableMem, float64(n.Allocatable.Memory), n.Name, n.Datacenter)
		gauge(descBoundCPU, float64(n.Used.CPUs), n.Name, n.Datacenter)
		gauge(descBoundMem, float64(n.Used.Memory), n.Name, n.Datacenter)
		gauge(descNodeReady, ready, n.Name, n.Datacenter)
		gauge(descNodeVMs, float64(n.VMs), n.Name, n.Datacenter)
	}
	type nodePhase struct{ node, phase string }
	counts := map[nodePhase]int{}
	for _, obj := range ctl.inf.VMs.GetStore().List() {
		vm := obj.(*apps.VMInstance)
		phase := string(vm.Status.Phase)
		if phase == "" {
			phase = string(apps.VMPending)
		}
		counts[nodePhase{vm.Status.Node, phase}]++
	}
	for k, n := range counts {
		gauge(descPhaseCount, float64(n), k.node, k.phase)
	}
}
