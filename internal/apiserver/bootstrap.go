package apiserver

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"

	"kumo.dev/kumo/internal/controller/instance"
	"kumo.dev/kumo/internal/controller/tenant"
	"kumo.dev/kumo/internal/scheduler"
	apps "kumo.dev/kumo/pkg/apis/apps/v1alpha1"
	kumo "kumo.dev/kumo/pkg/apis/kumo/v1alpha1"
	"kumo.dev/kumo/pkg/client"
)

// informerResync is how often the controllers' informers replay their caches.
const informerResync = 10 * time.Minute

// systemNamespaces exist on every cluster: events about cluster-scoped objects go to "default".
var systemNamespaces = []string{metav1.NamespaceDefault, "kumo-system"}

// bootstrap creates the system namespaces and the built-in instance types and profiles. Objects
// that exist are left as they are, so an admin's edits survive restarts.
func bootstrap(ctx context.Context, loopback *rest.Config) error {
	c, err := client.New(loopback)
	if err != nil {
		return err
	}
	for _, ns := range systemNamespaces {
		_, err := c.Core.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
		if err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("create namespace %s: %w", ns, err)
		}
	}
	var objs []runtime.Object
	for _, t := range kumo.BuiltinInstanceTypes() {
		objs = append(objs, &t)
	}
	for _, p := range kumo.BuiltinInstanceProfiles() {
		objs = append(objs, &p)
	}
	created := 0
	for _, o := range objs {
		resource := "instancetypes"
		if _, ok := o.(*kumo.InstanceProfile); ok {
			resource = "instanceprofiles"
		}
		err := c.Kumo.Post().Resource(resource).Body(o).Do(ctx).Error()
		switch {
		case err == nil:
			created++
		case !apierrors.IsAlreadyExists(err):
			return fmt.Errorf("create built-in %s: %w", resource, err)
		}
	}
	slog.Info("built-in objects in place", "created", created, "total", len(objs))
	return nil
}

// startControllers starts the server's reconcilers on the loopback client.
func startControllers(ctx context.Context, loopback *rest.Config) error {
	c, err := client.New(loopback)
	if err != nil {
		return err
	}
	go tenant.NewController(c, LabelTenant).Run(ctx, 2)

	inf := scheduler.Informers{
		VMs:   client.NewInformer(c.Apps, "vminstances", &apps.VMInstance{}, "", informerResync),
		Disks: client.NewInformer(c.Apps, "vmdisks", &apps.VMDisk{}, "", informerResync),
		Nodes: client.NewInformer(c.Kumo, "nodes", &kumo.Node{}, "", informerResync),
		Types: client.NewInformer(c.Kumo, "instancetypes", &kumo.InstanceType{}, "", informerResync),
	}
	go scheduler.NewController(c, inf).Run(ctx)
	go instance.NewController(c, inf.VMs).Run(ctx, 2)
	for _, i := range []cache.SharedIndexInformer{inf.VMs, inf.Disks, inf.Nodes, inf.Types} {
		go i.Run(ctx.Done())
	}
	return nil
}
