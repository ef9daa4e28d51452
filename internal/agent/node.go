package agent

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	kumo "kumo.dev/kumo/pkg/apis/kumo/v1alpha1"
)

// register creates or updates the Node with what this machine offers.
func (a *Agent) register(ctx context.Context) error {
	cpus, mem, err := a.capacity()
	if err != nil {
		return err
	}
	allocCPU := cpus - a.opts.ReserveCPUs
	allocMem := mem - a.opts.ReserveMemory.Value()
	if allocCPU < 1 || allocMem < 256<<20 {
		return fmt.Errorf("after the reserve (%d vCPU, %s) the node has %d vCPU and %d MiB left for VMs", a.opts.ReserveCPUs, a.opts.ReserveMemory.String(), allocCPU, allocMem>>20)
	}
	node := &kumo.Node{}
	err = a.c.Kumo.Get().Resource("nodes").Name(a.opts.Node).Do(ctx).Into(node)
	switch {
	case apierrors.IsNotFound(err):
		node = &kumo.Node{ObjectMeta: metav1.ObjectMeta{Name: a.opts.Node}, Spec: kumo.NodeSpec{Datacenter: a.opts.Datacenter}}
		if err := a.c.Kumo.Post().Resource("nodes").Body(node).Do(ctx).Into(node); err != nil {
			return fmt.Errorf("register node %s: %w", a.opts.Node, err)
		}
	case err != nil:
		return fmt.Errorf("read node %s: %w", a.opts.Node, err)
	case node.Spec.Datacenter != a.opts.Datacenter:
		node.Spec.Datacenter = a.opts.Datacenter
		if err := a.c.Kumo.Put().Resource("nodes").Name(node.Name).Body(node).Do(ctx).Into(node); err != nil {
			return fmt.Errorf("move node %s to datacenter %s: %w", node.Name, a.opts.Datacenter, err)
		}
	}
	localCap, localAlloc, err := localStorage(a.local.Dir)
	if err != nil {
		return err
	}
	node.Status.Capacity = map[string]resource.Quantity{"cpu": *resource.NewQuantity(cpus, resource.DecimalSI), "memory": *resource.NewQuantity(mem, resource.BinarySI),
		kumo.ResourceLocalStorage: *resource.NewQuantity(localCap, resource.BinarySI)}
	node.Status.Allocatable = map[string]resource.Quantity{"cpu": *resource.NewQuantity(allocCPU, resource.DecimalSI), "memory": *resource.NewQuantity(allocMem, resource.BinarySI),
		kumo.ResourceLocalStorage: *resource.NewQuantity(localAlloc, resource.BinarySI)}
	node.Status.QEMUVersion, node.Status.Accelerator, node.Status.CPUModels = a.qemuV, a.accel, a.cpuModels
	node.Status.AgentEndpoint, node.Status.AgentCertificate = a.endpoint, a.certPEM
	node.Status.Addresses = []string{a.advertiseHost()}
	node.Status.Images = a.local.Images()
	node.Status.StorageClasses = a.storageClasses()
	a.markReady(node)
	if err := a.c.Kumo.Put().Resource("nodes").Name(node.Name).SubResource("status").Body(node).Do(ctx).Error(); err != nil {
		return fmt.Errorf("report node %s status: %w", node.Name, err)
	}
	slog.Info("node registered", "node", node.Name, "datacenter", node.Spec.Datacenter, "cpus", allocCPU, "memoryMiB", allocMem>>20, "images", node.Status.Images)
	return nil
}

func (a *Agent) markReady(n *kumo.Node) {
	now := metav1.Now()
	n.Status.LastHeartbeatTime = now
	meta.SetStatusCondition(&n.Status.Conditions, metav1.Condition{Type: kumo.NodeConditionReady, Status: metav1.ConditionTrue,
		Reason: "AgentReady", Message: "the agent renews its heartbeat"})
}

// heartbeatTimeout bounds one renewal (a read and a write of the Node).
const heartbeatTimeout = 5 * time.Second

// heartbeat renews the node's heartbeat (and its image list) about every second.
func (a *Agent) heartbeat(ctx context.Context) {
	wait.UntilWithContext(ctx, a.beat, HeartbeatPeriod)
}

func (a *Agent) beat(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, heartbeatTimeout)
	defer cancel()
	node := &kumo.Node{}
	if err := a.c.Kumo.Get().Resource("nodes").Name(a.opts.Node).Do(ctx).Into(node); err != nil {
		slog.Warn("heartbeat: read node", "err", err)
		return
	}
	a.markReady(node)
	node.Status.Images = a.local.Images()
	node.Status.AgentEndpoint, node.Status.AgentCertificate = a.endpoint, a.certPEM
	if err := a.c.Kumo.Put().Resource("nodes").Name(a.opts.Node).SubResource("status").Body(node).Do(ctx).Error(); err != nil && !apierrors.IsConflict(err) {
		slog.Warn("heartbeat", "err", err)
	}
}

// storageClasses lists the classes this node has a driver for, sorted.
func (a *Agent) storageClasses() []string {
	var out []string
	for class := range a.drives {
		out = append(out, string(class))
	}
	sort.Strings(out)
	return out
}

// capacity is the machine's vCPUs and memory, unless overridden.
func (a *Agent) capacity() (int64, int64, error) {
	cpus, mem := a.opts.CPUs, a.opts.Memory.Value()
	if cpus == 0 {
		cpus = int64(runtime.NumCPU())
	}
	if mem == 0 {
		var err error
		if mem, err = memTotal(); err != nil {
			return 0, 0, err
		}
	}
	return cpus, mem, nil
}

func memTotal() (int64, error) {
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if rest, ok := strings.CutPrefix(s.Text(), "MemTotal:"); ok {
			kb, err := strconv.ParseInt(strings.Fields(rest)[0], 10, 64)
			return kb << 10, err
		}
	}
	return 0, fmt.Errorf("no MemTotal in /proc/meminfo")
}
