package main

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	apps "kumo.dev/kumo/pkg/apis/apps/v1alpha1"
	kumo "kumo.dev/kumo/pkg/apis/kumo/v1alpha1"
	"kumo.dev/kumo/pkg/client"
)

// parallel runs fn(i) for i in [0, n) on workers goroutines and returns the first error, after
// which the remaining work is abandoned.
func parallel(ctx context.Context, n, workers int, fn func(ctx context.Context, i int) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		next     atomic.Int64
		once     sync.Once
		firstErr error
		wg       sync.WaitGroup
	)
	for range max(1, min(workers, n)) {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= n || ctx.Err() != nil {
					return
				}
				if err := fn(ctx, i); err != nil {
					once.Do(func() { firstErr = err; cancel() })
					return
				}
			}
		})
	}
	wg.Wait()
	if firstErr == nil && ctx.Err() != nil {
		// The parent context ended (interrupt).
		return fmt.Errorf("interrupted: %w", context.Cause(ctx))
	}
	return firstErr
}

// createTenants creates n tenants and waits until each is Active. It returns their namespaces.
func createTenants(ctx context.Context, c *client.Client, n, workers int) ([]string, error) {
	start := time.Now()
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("bench-%d", i)
	}
	err := parallel(ctx, n, workers, func(ctx context.Context, i int) error {
		t := &kumo.Tenant{
			ObjectMeta: metav1.ObjectMeta{Name: names[i]},
			Spec:       kumo.TenantSpec{DisplayName: "bench tenant " + names[i]},
		}
		if err := c.Kumo.Post().Resource("tenants").Body(t).Do(ctx).Error(); err != nil {
			return fmt.Errorf("create tenant %s: %w", names[i], err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	slog.Info("tenants created; waiting for Active", "tenants", n, "took", time.Since(start).Round(time.Millisecond))

	want := make(map[string]bool, n)
	for _, name := range names {
		want[name] = true
	}
	deadline := time.Now().Add(60*time.Second + time.Duration(n)*100*time.Millisecond)
	for {
		var list kumo.TenantList
		if err := c.Kumo.Get().Resource("tenants").Do(ctx).Into(&list); err != nil {
			return nil, fmt.Errorf("list tenants: %w", err)
		}
		active := 0
		var pending []string
		for _, t := range list.Items {
			if !want[t.Name] {
				continue
			}
			if t.Status.Phase == kumo.TenantActive {
				active++
			} else if len(pending) < 5 {
				pending = append(pending, fmt.Sprintf("%s(%q)", t.Name, t.Status.Phase))
			}
		}
		if active == n {
			break
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("only %d of %d tenants Active after waiting; e.g. %v", active, n, pending)
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("waiting for tenants: %w", ctx.Err())
		case <-time.After(250 * time.Millisecond):
		}
	}
	slog.Info("tenants Active", "tenants", n, "took", time.Since(start).Round(time.Millisecond))
	namespaces := make([]string, n)
	for i, name := range names {
		namespaces[i] = kumo.TenantNamespacePrefix + name
	}
	return namespaces, nil
}

// newVM is the VM every create sends.
func newVM(name, sshKey string) *apps.VMInstance {
	return &apps.VMInstance{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: apps.VMInstanceSpec{
			InstanceType:    "u1.medium",
			InstanceProfile: "ubuntu",
			Disks:           []apps.VMDiskRef{{Name: "disk"}},
			SSHKeys:         []string{sshKey},
		},
	}
}

// storedVM is a created VM and the JSON the API answered with (what it stored, save for
// resourceVersion).
type storedVM struct {
	ns, name string
	raw      []byte
}

// createResult is the outcome of a create phase.
type createResult struct {
	vms     []storedVM
	lat     summary
	elapsed time.Duration
}

func (r createResult) rate() float64 { return float64(len(r.vms)) / r.elapsed.Seconds() }

// createVMs creates n VMs named prefix-NNNNN spread round-robin over namespaces. onDone, if set,
// is called with each VM's key, the moment its create was sent and the moment its response
// arrived.
func createVMs(ctx context.Context, c *client.Client, namespaces []string, prefix string, n, workers int, sshKey string, onDone func(key string, sent, at time.Time)) (createResult, error) {
	var lat latencies
	vms := make([]storedVM, n)
	var done atomic.Int64
	start := time.Now()
	progress := time.NewTicker(5 * time.Second)
	defer progress.Stop()
	stopProgress := make(chan struct{})
	go func() {
		for {
			select {
			case <-stopProgress:
				return
			case <-progress.C:
				d := done.Load()
				slog.Info("creating VMs", "done", d, "of", n, "rate/s", fmt.Sprintf("%.1f", float64(d)/time.Since(start).Seconds()))
			}
		}
	}()
	err := parallel(ctx, n, workers, func(ctx context.Context, i int) error {
		ns, name := namespaces[i%len(namespaces)], fmt.Sprintf("%s-%05d", prefix, i)
		t0 := time.Now()
		raw, err := c.Apps.Post().Namespace(ns).Resource("vminstances").Body(newVM(name, sshKey)).Do(ctx).Raw()
		at := time.Now()
		if err != nil {
			return fmt.Errorf("create VM %s/%s: %w", ns, name, err)
		}
		lat.add(at.Sub(t0))
		if onDone != nil {
			onDone(ns+"/"+name, t0, at)
		}
		vms[i] = storedVM{ns: ns, name: name, raw: raw}
		done.Add(1)
		return nil
	})
	close(stopProgress)
	if err != nil {
		return createResult{}, err
	}
	return createResult{vms: vms, lat: lat.summary(), elapsed: time.Since(start)}, nil
}

// listResult is the outcome of the list phase.
type listResult struct {
	all, oneNS           summary
	allItems, oneNSItems int
}

// listVMs lists all VMs n times, then n times the VMs of one namespace (cycling through them).
// The timing covers the request and reading the whole body; the items are counted afterwards.
func listVMs(ctx context.Context, c *client.Client, namespaces []string, n int) (listResult, error) {
	var res listResult
	var all, one latencies
	for i := range n {
		t0 := time.Now()
		r := c.Apps.Get().Resource("vminstances").Do(ctx)
		all.add(time.Since(t0))
		var list apps.VMInstanceList
		if err := r.Into(&list); err != nil {
			return res, fmt.Errorf("list all VMs: %w", err)
		}
		if i == 0 {
			res.allItems = len(list.Items)
		}
	}
	for i := range n {
		ns := namespaces[i%len(namespaces)]
		t0 := time.Now()
		r := c.Apps.Get().Namespace(ns).Resource("vminstances").Do(ctx)
		one.add(time.Since(t0))
		var list apps.VMInstanceList
		if err := r.Into(&list); err != nil {
			return res, fmt.Errorf("list VMs of %s: %w", ns, err)
		}
		if i == 0 {
			res.oneNSItems = len(list.Items)
		}
	}
	res.all, res.oneNS = all.summary(), one.summary()
	return res, nil
}
