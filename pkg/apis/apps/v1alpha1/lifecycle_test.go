package v1alpha1

import (
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestWantsRunningFollowsRunStrategy(t *testing.T) {
	t0 := metav1.NewTime(time.Unix(1000, 0))
	t1 := metav1.NewTime(time.Unix(2000, 0))
	exit := func(inc int64, r ExitReason, at metav1.Time) *IncarnationExit {
		return &IncarnationExit{Incarnation: inc, Reason: r, Time: at}
	}
	req := func(a RunAction, at metav1.Time) *RunRequest { return &RunRequest{Action: a, Time: at} }
	cases := []struct {
		name     string
		strategy RunStrategy
		status   VMInstanceStatus
		want     bool
	}{
		{"Always runs", RunAlways, VMInstanceStatus{}, true},
		{"Always reruns after a clean guest shutdown", RunAlways, VMInstanceStatus{Incarnation: 1, LastExit: exit(1, ExitSucceeded, t0)}, true},
		{"Halted never runs", RunHalted, VMInstanceStatus{}, false},
		{"Manual waits for start", RunManual, VMInstanceStatus{}, false},
		{"Manual runs after start", RunManual, VMInstanceStatus{RunRequest: req(ActionStart, t0)}, true},
		{"Manual stops after stop", RunManual, VMInstanceStatus{RunRequest: req(ActionStop, t1)}, false},
		{"Manual stays off after the guest shut down", RunManual, VMInstanceStatus{Incarnation: 1, RunRequest: req(ActionStart, t0), LastExit: exit(1, ExitSucceeded, t1)}, false},
		{"Manual runs again on a start after the exit", RunManual, VMInstanceStatus{Incarnation: 1, RunRequest: req(ActionStart, t1), LastExit: exit(1, ExitSucceeded, t0)}, true},
		{"Manual restart starts a new incarnation", RunManual, VMInstanceStatus{Incarnation: 1, RestartIncarnation: 1, RunRequest: req(ActionStart, t0), LastExit: exit(1, ExitStopped, t1)}, true},
		{"RerunOnFailure runs at first", RunRerunOnFailure, VMInstanceStatus{}, true},
		{"RerunOnFailure reruns after a crash", RunRerunOnFailure, VMInstanceStatus{Incarnation: 1, LastExit: exit(1, ExitFailed, t0)}, true},
		{"RerunOnFailure stays off after a clean shutdown", RunRerunOnFailure, VMInstanceStatus{Incarnation: 1, LastExit: exit(1, ExitSucceeded, t0)}, false},
		{"RerunOnFailure honours stop", RunRerunOnFailure, VMInstanceStatus{RunRequest: req(ActionStop, t0)}, false},
		{"RerunOnFailure starts again on request", RunRerunOnFailure, VMInstanceStatus{Incarnation: 1, LastExit: exit(1, ExitSucceeded, t0), RunRequest: req(ActionStart, t1)}, true},
		{"Once runs at first", RunOnce, VMInstanceStatus{}, true},
		{"Once stays off after a crash", RunOnce, VMInstanceStatus{Incarnation: 1, LastExit: exit(1, ExitFailed, t0)}, false},
		{"Once stays off after a clean shutdown", RunOnce, VMInstanceStatus{Incarnation: 1, LastExit: exit(1, ExitSucceeded, t0)}, false},
		{"Once restart keeps it running", RunOnce, VMInstanceStatus{Incarnation: 1, RestartIncarnation: 1, LastExit: exit(1, ExitStopped, t0)}, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			vm := &VMInstance{Spec: VMInstanceSpec{RunStrategy: tc.strategy}, Status: tc.status}
			if got := vm.WantsRunning(); got != tc.want {
				t.Errorf("WantsRunning() = %v, want %v", got, tc.want)
			}
		})
	}
}
