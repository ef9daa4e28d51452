package main

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/watch"

	apps "kumo.dev/kumo/pkg/apis/apps/v1alpha1"
	"kumo.dev/kumo/pkg/client"
)

// phaseWatch watches the namespace's VMs and remembers when each was first seen Running (or
// Failed, with the reason). The watch is reopened when the server ends it.
type phaseWatch struct {
	mu      sync.Mutex
	running map[string]time.Time
	failed  map[string]string
	change  chan struct{}
}

func startPhaseWatch(ctx context.Context, c *client.Client, ns string) (*phaseWatch, error) {
	p := &phaseWatch{running: map[string]time.Time{}, failed: map[string]string{}, change: make(chan struct{})}
	rv, err := p.list(ctx, c, ns)
	if err != nil {
		return nil, err
	}
	go func() {
		for ctx.Err() == nil {
			if rv == "" {
				if rv, err = p.list(ctx, c, ns); err != nil {
					slog.Warn("relist VMs for the phase watch", "err", err)
					time.Sleep(time.Second)
					continue
				}
			}
			w, err := c.Apps.Get().Namespace(ns).Resource("vminstances").
				Param("watch", "true").Param("resourceVersion", rv).Watch(ctx)
			if err != nil {
				slog.Warn("watch VMs", "err", err)
				rv = ""
				time.Sleep(time.Second)
				continue
			}
			for ev := range w.ResultChan() {
				if ev.Type == watch.Error {
					rv = "" // usually 410 Gone: list again
					break
				}
				if vm, ok := ev.Object.(*apps.VMInstance); ok {
					rv = vm.ResourceVersion
					if ev.Type != watch.Bookmark {
						p.observe(vm, time.Now())
					}
				}
			}
			w.Stop()
		}
	}()
	return p, nil
}

// list records the VMs' current phases and returns the list's resourceVersion.
func (p *phaseWatch) list(ctx context.Context, c *client.Client, ns string) (string, error) {
	var l apps.VMInstanceList
	if err := c.Apps.Get().Namespace(ns).Resource("vminstances").Do(ctx).Into(&l); err != nil {
		return "", fmt.Errorf("list VMs in %s: %w", ns, err)
	}
	now := time.Now()
	for i := range l.Items {
		p.observe(&l.Items[i], now)
	}
	return l.ResourceVersion, nil
}

func (p *phaseWatch) observe(vm *apps.VMInstance, at time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch vm.Status.Phase {
	case apps.VMRunning:
		if _, seen := p.running[vm.Name]; seen {
			return
		}
		p.running[vm.Name] = at
	case apps.VMFailed:
		if _, seen := p.failed[vm.Name]; seen {
			return
		}
		msg := "no lastExit"
		if vm.Status.LastExit != nil {
			msg = vm.Status.LastExit.Message
		}
		p.failed[vm.Name] = msg
	default:
		return
	}
	close(p.change)
	p.change = make(chan struct{})
}

// waitRunning returns when the VM was first seen Running; a Failed VM is an error.
func (p *phaseWatch) waitRunning(ctx context.Context, name string) (time.Time, error) {
	for {
		p.mu.Lock()
		at, ok := p.running[name]
		msg, failed := p.failed[name]
		ch := p.change
		p.mu.Unlock()
		switch {
		case ok:
			return at, nil
		case failed:
			return time.Time{}, fmt.Errorf("VM %s failed: %s", name, msg)
		}
		select {
		case <-ctx.Done():
			return time.Time{}, fmt.Errorf("VM %s not Running: %w", name, ctx.Err())
		case <-ch:
		}
	}
}
