package lab

import (
	"context"
	"fmt"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	coordinationv1 "k8s.io/client-go/kubernetes/typed/coordination/v1"
)

// The Lease the servers elect their controllers' leader on.
const (
	LeaderLeaseNamespace = "kumo-system"
	LeaderLeaseName      = "kumo-controllers"
)

// Leader reads the controllers' Lease through the server at url: the holder's identity, its
// datacenter (matched by name or address; empty if none matches) and the last renewal.
func (s *State) Leader(ctx context.Context, url string) (holder, dc string, renewed time.Time, err error) {
	cfg, err := restConfigFor(s.Kubeconfig, url)
	if err != nil {
		return "", "", time.Time{}, err
	}
	cfg.Timeout = 2 * time.Second
	cl, err := coordinationv1.NewForConfig(cfg)
	if err != nil {
		return "", "", time.Time{}, err
	}
	l, err := cl.Leases(LeaderLeaseNamespace).Get(ctx, LeaderLeaseName, metav1.GetOptions{})
	if err != nil {
		return "", "", time.Time{}, fmt.Errorf("leader lease via %s: %w", url, err)
	}
	if l.Spec.HolderIdentity == nil || *l.Spec.HolderIdentity == "" || l.Spec.RenewTime == nil {
		return "", "", time.Time{}, fmt.Errorf("lease %s/%s has no holder", LeaderLeaseNamespace, LeaderLeaseName)
	}
	holder = *l.Spec.HolderIdentity
	for _, d := range s.Datacenters {
		if strings.Contains(holder, d.Address) || strings.Contains(holder, d.Name) {
			dc = d.Name
		}
	}
	return holder, dc, l.Spec.RenewTime.Time, nil
}

// WaitNewLeader polls the servers other than those of excludeDC until the Lease names a holder
// other than old, renewed after since, and returns it with the time it was first seen.
func (s *State) WaitNewLeader(ctx context.Context, old, excludeDC string, since time.Time, timeout time.Duration) (string, time.Time, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last error
	for {
		for _, d := range s.Datacenters {
			if d.Name == excludeDC || d.Server == nil {
				continue
			}
			h, _, renewed, err := s.Leader(ctx, d.URL)
			if err != nil {
				last = err
				continue
			}
			if h != old && renewed.After(since.Add(-time.Second)) {
				return h, time.Now(), nil
			}
			last = fmt.Errorf("lease still held by %s", h)
		}
		select {
		case <-ctx.Done():
			return "", time.Time{}, fmt.Errorf("no new leader: %v: %w", last, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}
