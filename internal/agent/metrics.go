package agent

import (
	"context"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"kumo.dev/kumo/internal/hypervisor/qemu"
	apps "kumo.dev/kumo/pkg/apis/apps/v1alpha1"
)

// scrapeTimeout bounds what one scrape waits for the QEMUs of the node: a VM whose monitor does
// not answer in time (busy, frozen) is left out of that scrape (kumo_vmi_stats_up 0), it never
// holds the scrape up.
const scrapeTimeout = 3 * time.Second

// Label sets of the per-VM metrics; names follow KubeVirt's kubevirt_vmi_* so that existing
// dashboards work.
var (
	vmLabels    = []string{"namespace", "name", "node"}
	vcpuLabels  = append(append([]string{}, vmLabels...), "id", "state")
	driveLabels = append(append([]string{}, vmLabels...), "drive")
	nicLabels   = append(append([]string{}, vmLabels...), "interface")
)

func desc(name, help string, labels []string) *prometheus.Desc {
	return prometheus.NewDesc(name, help, labels, nil)
}

var (
	descVMInfo = desc("kubevirt_vmi_info", "A VM bound to this node, its phase, instance type and profile (preference); always 1.",
		append(append([]string{}, vmLabels...), "phase", "instance_type", "preference"))
	descStatsUp = desc("kumo_vmi_stats_up", "1 when this scrape read the VM's statistics from its QEMU, 0 when QEMU did not answer in time.", vmLabels)

	descVCPU       = desc("kubevirt_vmi_vcpu_seconds_total", "CPU time of each vCPU's host thread (user and system), in seconds.", vcpuLabels)
	descCPUTotal   = desc("kubevirt_vmi_cpu_usage_seconds_total", "CPU time of the whole QEMU process (vCPUs and emulation), in seconds.", vmLabels)
	descCPUUser    = desc("kubevirt_vmi_cpu_user_usage_seconds_total", "CPU time of the QEMU process in user mode, in seconds.", vmLabels)
	descCPUSystem  = desc("kubevirt_vmi_cpu_system_usage_seconds_total", "CPU time of the QEMU process in kernel mode, in seconds.", vmLabels)
	descMemDomain  = desc("kubevirt_vmi_memory_domain_bytes", "Memory the guest was given (configured plus hot-plugged), in bytes.", vmLabels)
	descMemBalloon = desc("kubevirt_vmi_memory_actual_balloon_bytes", "Memory the guest has after ballooning, in bytes (VMs with a balloon device only).", vmLabels)
	descMemRSS     = desc("kubevirt_vmi_memory_resident_bytes", "Resident set size of the QEMU process, in bytes.", vmLabels)

	descReadBytes  = desc("kubevirt_vmi_storage_read_traffic_bytes_total", "Bytes the guest read from the disk.", driveLabels)
	descWriteBytes = desc("kubevirt_vmi_storage_write_traffic_bytes_total", "Bytes the guest wrote to the disk.", driveLabels)
	descReadOps    = desc("kubevirt_vmi_storage_iops_read_total", "Read operations of the guest on the disk.", driveLabels)
	descWriteOps   = desc("kubevirt_vmi_storage_iops_write_total", "Write operations of the guest on the disk.", driveLabels)
	descFlushOps   = desc("kubevirt_vmi_storage_flush_requests_total", "Flush requests of the guest on the disk.", driveLabels)
	descReadTime   = desc("kubevirt_vmi_storage_read_times_seconds_total", "Time spent on the guest's reads of the disk, in seconds.", driveLabels)
	descWriteTime  = desc("kubevirt_vmi_storage_write_times_seconds_total", "Time spent on the guest's writes to the disk, in seconds.", driveLabels)
	descFlushTime  = desc("kubevirt_vmi_storage_flush_times_seconds_total", "Time spent on the guest's flushes of the disk, in seconds.", driveLabels)

	descRxBytes   = desc("kubevirt_vmi_network_receive_bytes_total", "Bytes the guest received on the interface.", nicLabels)
	descTxBytes   = desc("kubevirt_vmi_network_transmit_bytes_total", "Bytes the guest sent on the interface.", nicLabels)
	descRxPackets = desc("kubevirt_vmi_network_receive_packets_total", "Packets the guest received on the interface.", nicLabels)
	descTxPackets = desc("kubevirt_vmi_network_transmit_packets_total", "Packets the guest sent on the interface.", nicLabels)
	descRxErrors  = desc("kubevirt_vmi_network_receive_errors_total", "Receive errors on the interface.", nicLabels)
	descTxErrors  = desc("kubevirt_vmi_network_transmit_errors_total", "Transmit errors on the interface.", nicLabels)
	descRxDropped = desc("kubevirt_vmi_network_receive_packets_dropped_total", "Packets for the guest dropped on the interface.", nicLabels)
	descTxDropped = desc("kubevirt_vmi_network_transmit_packets_dropped_total", "Packets from the guest dropped on the interface.", nicLabels)
)

// vmCollector reports the VMs of this node: what the API says (phase) and what their QEMU and
// the host say (CPU, memory, disks, NICs). It reads the QEMUs at scrape time, every VM at once,
// within scrapeTimeout.
type vmCollector struct {
	a *Agent
	// nicStats reads a NIC's counters (readNICStats; tests replace it).
	nicStats func(qemu.NIC) (nicStats, error)
}

func (c *vmCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descVMInfo, descStatsUp, descVCPU, descCPUTotal, descCPUUser, descCPUSystem,
		descMemDomain, descMemBalloon, descMemRSS, descReadBytes, descWriteBytes, descReadOps, descWriteOps, descFlushOps,
		descReadTime, descWriteTime, descFlushTime, descRxBytes, descTxBytes, descRxPackets, descTxPackets,
		descRxErrors, descTxErrors, descRxDropped, descTxDropped} {
		ch <- d
	}
}

func (c *vmCollector) Collect(ch chan<- prometheus.Metric) {
	node := c.a.opts.Node
	for _, obj := range c.a.vms.GetStore().List() {
		vm := obj.(*apps.VMInstance)
		if vm.Status.Node != node {
			continue
		}
		ch <- prometheus.MustNewConstMetric(descVMInfo, prometheus.GaugeValue, 1, vm.Namespace, vm.Name, node,
			string(vm.Status.Phase), vm.Spec.InstanceType, vm.Spec.InstanceProfile)
	}

	c.a.mu.Lock()
	rts := make([]*runtimeVM, 0, len(c.a.running))
	for _, rt := range c.a.running {
		rts = append(rts, rt)
	}
	c.a.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), scrapeTimeout)
	defer cancel()
	var wg sync.WaitGroup
	for _, rt := range rts {
		wg.Go(func() { c.collectVM(ctx, rt, ch) })
	}
	wg.Wait()
}

// collectVM reports one incarnation. Counters come only from a QEMU that answered: a VM whose
// QEMU the agent has not reached, or that timed out, reports kumo_vmi_stats_up 0 and nothing
// else.
func (c *vmCollector) collectVM(ctx context.Context, rt *runtimeVM, ch chan<- prometheus.Metric) {
	ns, name, _ := splitKey(rt.key)
	labels := []string{ns, name, c.a.opts.Node}
	up := func(ok bool) {
		v := 0.0
		if ok {
			v = 1
		}
		ch <- prometheus.MustNewConstMetric(descStatsUp, prometheus.GaugeValue, v, labels...)
	}
	v := rt.monitored()
	if v == nil {
		up(false)
		return
	}
	s, err := readVMStats(ctx, v, rt.cfg, c.nicStats)
	if err != nil {
		slog.Debug("metrics: read VM statistics", "vm", rt.key, "err", err)
		up(false)
		return
	}
	up(true)
	counter := func(d *prometheus.Desc, v float64, extra ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, append(append([]string{}, labels...), extra...)...)
	}
	gauge := func(d *prometheus.Desc, v float64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	for _, vc := range s.vcpus {
		counter(descVCPU, vc.time.Seconds(), strconv.Itoa(vc.index), "running")
	}
	counter(descCPUTotal, s.process.CPU.Total().Seconds())
	counter(descCPUUser, s.process.CPU.User.Seconds())
	counter(descCPUSystem, s.process.CPU.System.Seconds())
	gauge(descMemDomain, float64(s.memory))
	gauge(descMemRSS, float64(s.process.ResidentBytes))
	if s.balloon > 0 {
		gauge(descMemBalloon, float64(s.balloon))
	}
	for _, d := range s.disks {
		counter(descReadBytes, float64(d.ReadBytes), d.drive)
		counter(descWriteBytes, float64(d.WriteBytes), d.drive)
		counter(descReadOps, float64(d.ReadOps), d.drive)
		counter(descWriteOps, float64(d.WriteOps), d.drive)
		counter(descFlushOps, float64(d.FlushOps), d.drive)
		counter(descReadTime, d.ReadTime.Seconds(), d.drive)
		counter(descWriteTime, d.WriteTime.Seconds(), d.drive)
		counter(descFlushTime, d.FlushTime.Seconds(), d.drive)
	}
	for _, n := range s.nics {
		counter(descRxBytes, float64(n.RxBytes), n.name)
		counter(descTxBytes, float64(n.TxBytes), n.name)
		counter(descRxPackets, float64(n.RxPackets), n.name)
		counter(descTxPackets, float64(n.TxPackets), n.name)
		counter(descRxErrors, float64(n.RxErrors), n.name)
		counter(descTxErrors, float64(n.TxErrors), n.name)
		counter(descRxDropped, float64(n.RxDropped), n.name)
		counter(descTxDropped, float64(n.TxDropped), n.name)
	}
}

// metricsHandler serves the node's metrics: its VMs and the agent process itself.
func (a *Agent) metricsHandler() http.Handler {
	reg := prometheus.NewRegistry()
	reg.MustRegister(&vmCollector{a: a, nicStats: readNICStats},
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError, Timeout: 2 * scrapeTimeout})
}
