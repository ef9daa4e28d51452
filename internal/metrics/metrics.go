// Package metrics defines the control plane's own Prometheus metrics — scheduling, VM start,
// leadership and the steps of a node failover — and registers them in k8s.io/component-base's
// legacy registry, which the API server serves on /metrics next to its request latency
// histograms. The controllers observe them; the agents' per-VM metrics live in internal/agent.
package metrics

import (
	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/component-base/metrics/legacyregistry"
)

// Scheduling results (label "result" of SchedulingAttempt).
const (
	ResultBound         = "bound"
	ResultUnschedulable = "unschedulable"
	ResultError         = "error"
)

// startBuckets are for durations from a tenth of a second to ten minutes (VM starts under TCG,
// waits for disks, failovers).
var startBuckets = []float64{0.1, 0.25, 0.5, 1, 2, 3, 5, 7.5, 10, 15, 20, 30, 45, 60, 90, 120, 180, 300, 600}

var (
	// SchedulingAttempt is how long one attempt to place a VM takes, by result.
	SchedulingAttempt = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "kumo_scheduler_scheduling_attempt_duration_seconds",
		Help:    "Duration of one attempt to place a VM (filters, scores and the binding write), by result: bound, unschedulable or error.",
		Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
	}, []string{"result"})
	// SchedulingPending is how long VMs waited for a node: from the scheduler first seeing the
	// VM wait (created, started, or its last incarnation ended) to its binding, waits for disks
	// and for room included.
	SchedulingPending = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "kumo_scheduler_pending_duration_seconds",
		Help:    "Time from the scheduler first seeing a VM wait for a node to its binding (disk preparation and lack of room included).",
		Buckets: startBuckets,
	})
	// PhaseFromCreation is the time from a VM's creation to its first incarnation reaching a
	// phase (Scheduled, Running): KubeVirt's name, whose VMIs are created at each start.
	PhaseFromCreation = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "kubevirt_vmi_phase_transition_time_from_creation_seconds",
		Help:    "Time from a VM's creation to its first incarnation reaching the phase (creation time has a one-second resolution).",
		Buckets: startBuckets,
	}, []string{"phase"})

	// Leader is 1 on the server whose controllers run (the leader when several servers run).
	Leader = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "kumo_controller_leader",
		Help: "1 on the API server whose controllers (scheduler, lifecycle, failover) run, 0 on a standby.",
	})

	// The steps of a node failover (ARCHITECTURE §3), observed by the node-health controller
	// for each node it declares dead. A failover's total for one VM is FailoverDetection +
	// FailoverVMRestart.
	FailoverDetection = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "kumo_failover_detection_seconds",
		Help:    "Time from a node's last heartbeat to the leader declaring the node dead.",
		Buckets: startBuckets,
	})
	FailoverFencing = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "kumo_failover_fencing_seconds",
		Help:    "Time from declaring a node dead to its storage being fenced (Ceph clients blocklisted, RBD locks broken).",
		Buckets: startBuckets,
	})
	FailoverVMRestart = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "kumo_failover_vm_restart_seconds",
		Help:    "Time from declaring a node dead to each of its VMs running on another node.",
		Buckets: startBuckets,
	})
	// FailoverNodes counts nodes declared dead, by what came of it: fenced, or fence_failed
	// (the VMs stay where they were).
	FailoverNodes = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "kumo_failover_nodes_total",
		Help: "Nodes declared dead, by result: fenced or fence_failed.",
	}, []string{"result"})
)

func init() {
	legacyregistry.RawMustRegister(SchedulingAttempt, SchedulingPending, PhaseFromCreation, Leader,
		FailoverDetection, FailoverFencing, FailoverVMRestart, FailoverNodes)
}

// Register adds a collector (e.g. one reading the controllers' caches) to the registry the API
// server serves; registering the same collector again is harmless.
func Register(c prometheus.Collector) error {
	err := legacyregistry.Registerer().Register(c)
	if _, ok := err.(prometheus.AlreadyRegisteredError); ok {
		return nil
	}
	return err
}
