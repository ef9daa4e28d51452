package main

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/watch"

	apps "kumo.dev/kumo/pkg/apis/apps/v1alpha1"
	"kumo.dev/kumo/pkg/client"
)

// watchTimeout bounds how long the last ADDED events may lag behind the last create.
const watchTimeout = 60 * time.Second

// watchResult is the outcome of the watch phase.
type watchResult struct {
	events int
	// delivery is the delay from a create's response to its ADDED event.
	delivery summary
	// sinceSent is the delay from sending a create to its ADDED event.
	sinceSent summary
	// early counts events that arrived before their create's response (counted as 0 delay).
	early int
	// rate is events per second from the first create's start to the last event.
	rate float64
}

// watchVMs watches all VMs from the resourceVersion of a list, creates n more and measures how
// long each ADDED event takes to arrive after the create's response.
func watchVMs(ctx context.Context, c *client.Client, namespaces []string, n, workers int, sshKey string) (watchResult, error) {
	var res watchResult
	var head apps.VMInstanceList
	if err := c.Apps.Get().Resource("vminstances").Param("limit", "1").Do(ctx).Into(&head); err != nil {
		return res, fmt.Errorf("list VMs for the watch's resourceVersion: %w", err)
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	w, err := c.Apps.Get().Resource("vminstances").
		Param("watch", "true").Param("resourceVersion", head.ResourceVersion).Watch(wctx)
	if err != nil {
		return res, fmt.Errorf("watch VMs from resourceVersion %s: %w", head.ResourceVersion, err)
	}
	defer w.Stop()

	var (
		mu       sync.Mutex
		created  = make(map[string][2]time.Time, n)
		arrived  = make(map[string]time.Time, n)
		all      = make(chan struct{})
		watchErr = make(chan error, 1)
	)
	go func() {
		for ev := range w.ResultChan() {
			now := time.Now()
			switch ev.Type {
			case watch.Error:
				select {
				case watchErr <- fmt.Errorf("watch error event: %v", ev.Object):
				default:
				}
				return
			case watch.Added:
			default:
				continue
			}
			vm, ok := ev.Object.(*apps.VMInstance)
			if !ok {
				continue
			}
			key := vm.Namespace + "/" + vm.Name
			mu.Lock()
			if _, seen := arrived[key]; !seen && isWatchVM(vm) {
				arrived[key] = now
				if len(arrived) == n {
					close(all)
				}
			}
			mu.Unlock()
		}
		select {
		case watchErr <- fmt.Errorf("watch closed early"):
		default:
		}
	}()

	start := time.Now()
	_, err = createVMs(ctx, c, namespaces, watchPrefix, n, workers, sshKey, func(key string, sent, at time.Time) {
		mu.Lock()
		created[key] = [2]time.Time{sent, at}
		mu.Unlock()
	})
	if err != nil {
		return res, err
	}
	slog.Info("watch VMs created; waiting for their events", "vms", n)
	select {
	case <-all:
	case err := <-watchErr:
		mu.Lock()
		got := len(arrived)
		mu.Unlock()
		return res, fmt.Errorf("after %d of %d ADDED events: %w", got, n, err)
	case <-time.After(watchTimeout):
		mu.Lock()
		got := len(arrived)
		mu.Unlock()
		return res, fmt.Errorf("only %d of %d ADDED events within %s of the last create", got, n, watchTimeout)
	case <-ctx.Done():
		return res, fmt.Errorf("waiting for watch events: %w", ctx.Err())
	}

	mu.Lock()
	defer mu.Unlock()
	var lat, sinceSent latencies
	var last time.Time
	for key, at := range arrived {
		c, ok := created[key]
		if !ok {
			return res, fmt.Errorf("ADDED event for %s, which this run did not create", key)
		}
		sinceSent.add(at.Sub(c[0]))
		d := at.Sub(c[1])
		if d < 0 {
			res.early++
			d = 0
		}
		lat.add(d)
		if at.After(last) {
			last = at
		}
	}
	res.events = len(arrived)
	res.delivery = lat.summary()
	res.sinceSent = sinceSent.summary()
	res.rate = float64(res.events) / last.Sub(start).Seconds()
	return res, nil
}

// watchPrefix names the VMs the watch phase creates.
const watchPrefix = "watch"

func isWatchVM(vm *apps.VMInstance) bool {
	return strings.HasPrefix(vm.Name, watchPrefix+"-")
}
