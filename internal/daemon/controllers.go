package daemon

import (
	"context"
	"fmt"
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"

	"kumo.dev/kumo/internal/apiserver"
	"kumo.dev/kumo/internal/controller/instance"
	"kumo.dev/kumo/internal/controller/tenant"
	"kumo.dev/kumo/internal/metrics"
	"kumo.dev/kumo/internal/scheduler"
	apps "kumo.dev/kumo/pkg/apis/apps/v1alpha1"
	kumo "kumo.dev/kumo/pkg/apis/kumo/v1alpha1"
	"kumo.dev/kumo/pkg/client"
)

// informerResync is how often the controllers' informers replay their caches.
const informerResync = 10 * time.Minute

// startControllers starts the server role's reconcilers (tenants, scheduler, VM lifecycle) on
// the API server's loopback client, sharing one informer per kind. They stop with ctx.
func startControllers(ctx context.Context, loopback *rest.Config) error {
	c, err := client.New(loopback)
	if err != nil {
		return fmt.Errorf("controllers' client: %w", err)
	}
	go tenant.NewController(c, apiserver.LabelTenant).Run(ctx, 2)

	inf := scheduler.Informers{
		VMs:    client.NewInformer(c.Apps, "vminstances", &apps.VMInstance{}, "", informerResync),
		Disks:  client.NewInformer(c.Apps, "vmdisks", &apps.VMDisk{}, "", informerResync),
		Nodes:  client.NewInformer(c.Kumo, "nodes", &kumo.Node{}, "", informerResync),
		Types:  client.NewInformer(c.Kumo, "instancetypes", &kumo.InstanceType{}, "", informerResync),
		Images: client.NewInformer(c.Kumo, "goldenimages", &kumo.GoldenImage{}, "", informerResync),
	}
	sched := scheduler.NewController(c, inf)
	// Per-node resources and VMs by phase, as the scheduler counts them, on the server's /metrics.
	if err := metrics.Register(sched.Collector()); err != nil {
		return fmt.Errorf("register the scheduler's metrics: %w", err)
	}
	metrics.Leader.Set(1) // one server runs the controllers until leader election lands
	go sched.Run(ctx)
	go instance.NewController(c, inf.VMs).Run(ctx, 2)
	for _, i := range []cache.SharedIndexInformer{inf.VMs, inf.Disks, inf.Nodes, inf.Types, inf.Images} {
		go i.Run(ctx.Done())
	}
	return nil
}
