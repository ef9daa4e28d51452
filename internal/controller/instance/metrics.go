package instance

import (
	"time"

	"kumo.dev/kumo/internal/metrics"
	apps "kumo.dev/kumo/pkg/apis/apps/v1alpha1"
)

// observeTransition records, when a VM's first incarnation reaches Scheduled or Running, how long
// after the VM's creation that was. Only changes seen in the watch count: a resync (old and new
// alike) or a server that starts later observes nothing twice.
func observeTransition(old, vm *apps.VMInstance, now time.Time) {
	if vm.Status.Incarnation != 1 || old.Status.Phase == vm.Status.Phase {
		return
	}
	switch vm.Status.Phase {
	case apps.VMScheduled, apps.VMRunning:
		metrics.PhaseFromCreation.WithLabelValues(string(vm.Status.Phase)).Observe(now.Sub(vm.CreationTimestamp.Time).Seconds())
	}
}
