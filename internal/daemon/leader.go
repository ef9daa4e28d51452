package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
	"k8s.io/client-go/tools/record"

	"kumo.dev/kumo/pkg/client"
)

// The Lease the servers elect the one that runs the controllers with.
const (
	LeaderLeaseNamespace = "kumo-system"
	LeaderLeaseName      = "kumo-controllers"
)

// LeaderElection configures how the servers elect the one that runs controllers and scheduler.
// The timings are client-go's (and kube-controller-manager's): a leader renews its lease every
// RetryPeriod, gives up leadership when it could not renew for RenewDeadline, and the others take
// over once LeaseDuration passed without a renewal.
type LeaderElection struct {
	// Enabled: when false, this server runs the controllers unconditionally (a single server only).
	Enabled                                   bool
	LeaseDuration, RenewDeadline, RetryPeriod time.Duration
}

// DefaultLeaderElection are client-go's recommended timings.
func DefaultLeaderElection() LeaderElection {
	return LeaderElection{Enabled: true, LeaseDuration: 15 * time.Second, RenewDeadline: 10 * time.Second, RetryPeriod: 2 * time.Second}
}

// Validate checks the timings as client-go would (it panics on bad ones).
func (l LeaderElection) Validate() error {
	if !l.Enabled {
		return nil
	}
	switch {
	case l.RetryPeriod <= 0:
		return fmt.Errorf("--leader-elect-retry-period must be positive (got %s)", l.RetryPeriod)
	case l.RenewDeadline <= time.Duration(leaderelection.JitterFactor*float64(l.RetryPeriod)):
		return fmt.Errorf("--leader-elect-renew-deadline (%s) must be greater than %.1f x --leader-elect-retry-period (%s)", l.RenewDeadline, leaderelection.JitterFactor, l.RetryPeriod)
	case l.LeaseDuration <= l.RenewDeadline:
		return fmt.Errorf("--leader-elect-lease-duration (%s) must be greater than --leader-elect-renew-deadline (%s)", l.LeaseDuration, l.RenewDeadline)
	}
	return nil
}

// runLeaderElection runs the controllers while this server (identity) holds the leader Lease, and
// keeps competing for it until ctx ends. Losing the lease ends the controllers' context; the
// server keeps serving the API and runs for leadership again.
func runLeaderElection(ctx context.Context, loopback *rest.Config, identity string, le LeaderElection, run func(ctx context.Context, loopback *rest.Config) error) error {
	c, err := client.New(loopback)
	if err != nil {
		return fmt.Errorf("leader election client: %w", err)
	}
	broadcaster := record.NewBroadcaster(record.WithContext(ctx))
	broadcaster.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: c.Core.CoreV1().Events(LeaderLeaseNamespace)})
	recorder := broadcaster.NewRecorder(client.Scheme, corev1.EventSource{Component: "kumo-server", Host: identity})
	lock := &resourcelock.LeaseLock{
		LeaseMeta:  metav1.ObjectMeta{Namespace: LeaderLeaseNamespace, Name: LeaderLeaseName},
		Client:     c.Core.CoordinationV1(),
		LockConfig: resourcelock.ResourceLockConfig{Identity: identity, EventRecorder: recorder},
	}
	cfg := leaderelection.LeaderElectionConfig{
		Lock:            lock,
		Name:            LeaderLeaseName,
		LeaseDuration:   le.LeaseDuration,
		RenewDeadline:   le.RenewDeadline,
		RetryPeriod:     le.RetryPeriod,
		ReleaseOnCancel: true,
		Callbacks: leaderelection.LeaderCallbacks{
			OnStartedLeading: func(lctx context.Context) {
				slog.Info("leading: starting controllers and scheduler", "identity", identity, "lease", LeaderLeaseNamespace+"/"+LeaderLeaseName)
				if err := run(lctx, loopback); err != nil {
					slog.Error("start controllers", "err", err)
				}
			},
			OnStoppedLeading: func() {
				slog.Warn("leadership lost or released: controllers stopped", "identity", identity)
			},
			OnNewLeader: func(id string) {
				slog.Info("leader elected", "leader", id, "self", id == identity)
			},
		},
	}
	elector, err := leaderelection.NewLeaderElector(cfg)
	if err != nil {
		return fmt.Errorf("leader election: %w", err)
	}
	go func() {
		defer broadcaster.Shutdown()
		for ctx.Err() == nil {
			elector.Run(ctx) // returns when leadership is lost or ctx ends
			if ctx.Err() == nil {
				slog.Info("running for leadership again", "identity", identity)
			}
		}
	}()
	return nil
}
