package scheduler

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"kumo.dev/kumo/internal/metrics"
)

// gauges gathers the collector and returns the value of each series of name, by its labels.
func gauges(t *testing.T, c prometheus.Collector, name string) map[string]float64 {
	t.Helper()
	reg := prometheus.NewRegistry()
	reg.MustRegister(c)
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			key := ""
			for _, l := range m.GetLabel() {
				key += l.GetName() + "=" + l.GetValue() + ","
			}
			out[key] = m.GetGauge().GetValue()
		}
	}
	return out
}

func pendingCount(t *testing.T) uint64 {
	t.Helper()
	var m dto.Metric
	if err := metrics.SchedulingPending.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetHistogram().GetSampleCount()
}

func TestNodeMetricsCountBoundResourcesAndVMsByPhase(t *testing.T) {
	f := newFixture(t)
	f.ctl.cachesSynced = func() bool { return true }
	f.node("n1", "dc1", true, []string{"local"})
	f.vm("running", "n1")
	f.vm("waiting", "")
	before := pendingCount(t)
	f.schedule(t, "waiting") // bound; the watch has not shown it yet
	if got := pendingCount(t) - before; got != 1 {
		t.Errorf("pending durations observed: %d, want 1", got)
	}
	c := f.ctl.Collector()
	if got := gauges(t, c, "kumo_node_bound_cpus"); got["datacenter=dc1,node=n1,"] != 2 {
		t.Errorf("kumo_node_bound_cpus = %v, want 2 (one bound VM, one binding on its way)", got)
	}
	if got := gauges(t, c, "kumo_node_allocatable_memory_bytes"); got["datacenter=dc1,node=n1,"] != 32<<30 {
		t.Errorf("kumo_node_allocatable_memory_bytes = %v", got)
	}
	if got := gauges(t, c, "kubevirt_vmi_phase_count"); got["node=n1,phase=Running,"] != 1 || got["node=,phase=Pending,"] != 1 || len(got) != 2 {
		t.Errorf("kubevirt_vmi_phase_count = %v", got)
	}
	f.ctl.cachesSynced = func() bool { return false }
	if got := gauges(t, c, "kumo_node_bound_cpus"); len(got) != 0 {
		t.Errorf("metrics from unsynced caches: %v", got)
	}
}
