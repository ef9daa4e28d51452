package instance

import (
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"kumo.dev/kumo/internal/metrics"
	apps "kumo.dev/kumo/pkg/apis/apps/v1alpha1"
)

func vmAt(phase apps.VMPhase, inc int64, created time.Time) *apps.VMInstance {
	vm := &apps.VMInstance{ObjectMeta: metav1.ObjectMeta{Name: "vm", Namespace: "tenant-a", CreationTimestamp: metav1.NewTime(created)}}
	vm.Status.Phase, vm.Status.Incarnation = phase, inc
	return vm
}

// fromCreation returns the sample count and sum of the time-from-creation histogram of phase.
func fromCreation(t *testing.T, phase string) (uint64, float64) {
	t.Helper()
	var m dto.Metric
	if err := metrics.PhaseFromCreation.WithLabelValues(phase).(interface{ Write(*dto.Metric) error }).Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetHistogram().GetSampleCount(), m.GetHistogram().GetSampleSum()
}

func TestTimeFromCreationToRunningIsObservedOnceForTheFirstIncarnation(t *testing.T) {
	created := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	now := created.Add(7 * time.Second)
	n0, sum0 := fromCreation(t, "Running")
	observeTransition(vmAt(apps.VMStarting, 1, created), vmAt(apps.VMRunning, 1, created), now)
	observeTransition(vmAt(apps.VMRunning, 1, created), vmAt(apps.VMRunning, 1, created), now)  // a resync
	observeTransition(vmAt(apps.VMStarting, 2, created), vmAt(apps.VMRunning, 2, created), now) // a restart
	observeTransition(vmAt(apps.VMRunning, 1, created), vmAt(apps.VMStopping, 1, created), now) // not a start phase
	n, sum := fromCreation(t, "Running")
	if n-n0 != 1 || sum-sum0 != 7 {
		t.Fatalf("Running observed %d times, %v s in all; want once, 7 s", n-n0, sum-sum0)
	}
}
