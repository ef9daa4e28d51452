package apiserver

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metainternalversion "k8s.io/apimachinery/pkg/apis/meta/internalversion"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	genericapirequest "k8s.io/apiserver/pkg/endpoints/request"

	"kumo.dev/kumo/internal/auth"
	apps "kumo.dev/kumo/pkg/apis/apps/v1alpha1"
	kumo "kumo.dev/kumo/pkg/apis/kumo/v1alpha1"
)

// What a node's credential reaches beyond what the authorizer (internal/auth) can decide from a
// request alone, since these rules depend on the objects: a node reads a VMDisk only if the
// scheduler placed it there (status.node), a VM bound to the node names it, or it is the source of
// a clone placed there; it writes the status of its own VMs and disks only and never moves them;
// it reports the outcome of a golden image import only while that import is undecided; and its
// events are about objects it may read.

// nodeScopedDisks is the VMDisk storage with reads by name narrowed for nodes.
type nodeScopedDisks struct {
	*gatedStorage
	l *lookups
}

// Get answers a node only for disks it may read (nodeMayReadDisk); everyone else as the store
// does (the authorizer has confined tenants to their namespace already).
func (s *nodeScopedDisks) Get(ctx context.Context, name string, opts *metav1.GetOptions) (runtime.Object, error) {
	obj, err := s.gatedStorage.Get(ctx, name, opts)
	if err != nil {
		return nil, err
	}
	if u, ok := genericapirequest.UserFrom(ctx); ok && !auth.IsAdmin(u) {
		if node := auth.NodeOf(u); node != "" {
			if err := s.l.nodeMayReadDisk(ctx, node, obj.(*apps.VMDisk)); err != nil {
				return nil, err
			}
		}
	}
	return obj, nil
}

// nodeMayReadDisk says (nil) whether node may read disk d: d is placed on it, a VM bound to it
// names d, or d is the source of a clone placed on it.
func (l *lookups) nodeMayReadDisk(ctx context.Context, node string, d *apps.VMDisk) error {
	if d.Status.Node == node {
		return nil
	}
	vms, err := l.vmsOf(ctx, d.Namespace)
	if err != nil {
		return err
	}
	for _, vm := range vms {
		if vm.Status.Node != node {
			continue
		}
		for _, ref := range vm.Spec.Disks {
			if ref.Name == d.Name {
				return nil
			}
		}
	}
	list, err := l.vmDisks.List(genericapirequest.WithNamespace(ctx, d.Namespace), &metainternalversion.ListOptions{})
	if err != nil {
		return fmt.Errorf("list the disks of namespace %s: %w", d.Namespace, err)
	}
	for _, other := range list.(*apps.VMDiskList).Items {
		if src := other.Spec.Source.Disk; src != nil && src.Name == d.Name && other.Status.Node == node {
			return nil
		}
	}
	return apierrors.NewForbidden(apps.Resource("vmdisks"), d.Name, fmt.Errorf(
		"node %q may read only the disks placed on it or used by its VMs (this one is placed on %q)", node, d.Status.Node))
}

// nodeMayReport lets a node record events only about the VMs bound to it and the disks it may
// read, in the namespace of that object: a node cannot write into a tenant it serves nothing of.
func (l *lookups) nodeMayReport(ctx context.Context, node string, obj runtime.Object) error {
	ev, ok := obj.(*corev1.Event)
	if !ok {
		return fmt.Errorf("event admission got a %T", obj)
	}
	ref := ev.InvolvedObject
	forbid := func(format string, args ...interface{}) error {
		return apierrors.NewForbidden(coreResource("events"), ev.Name, fmt.Errorf("node %q may record events only about its own VMs and disks: "+format, append([]interface{}{node}, args...)...))
	}
	if ref.Namespace != ev.Namespace {
		return forbid("the event is in namespace %q but about an object of namespace %q", ev.Namespace, ref.Namespace)
	}
	gv, err := schema.ParseGroupVersion(ref.APIVersion)
	if err != nil || gv.Group != apps.GroupName {
		return forbid("%s %s is not a VM or disk", ref.Kind, ref.Name)
	}
	ctx = genericapirequest.WithNamespace(ctx, ref.Namespace)
	switch ref.Kind {
	case "VMDisk":
		got, err := l.vmDisks.Get(ctx, ref.Name, &metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return forbid("VMDisk %s/%s does not exist", ref.Namespace, ref.Name)
		}
		if err != nil {
			return fmt.Errorf("read VMDisk %s/%s: %w", ref.Namespace, ref.Name, err)
		}
		if err := l.nodeMayReadDisk(ctx, node, got.(*apps.VMDisk)); err != nil {
			return forbid("VMDisk %s/%s is not one of them", ref.Namespace, ref.Name)
		}
		return nil
	case "VMInstance":
		vms, err := l.vmsOf(ctx, ref.Namespace)
		if err != nil {
			return err
		}
		for _, vm := range vms {
			if vm.Name == ref.Name && vm.Status.Node == node {
				return nil
			}
		}
		return forbid("VMInstance %s/%s is not bound to it", ref.Namespace, ref.Name)
	}
	return forbid("%s %s is not a VM or disk", ref.Kind, ref.Name)
}

// nodeOwnsStatus lets a node write the status of its own VMs and disks only, never move a VM or
// disk to another node (placement and binding are the scheduler's), and report a golden image
// import only while it is undecided.
func nodeOwnsStatus(node string, gr schema.GroupResource, name string, obj, old runtime.Object) error {
	forbid := func(format string, args ...interface{}) error {
		return apierrors.NewForbidden(gr, name, fmt.Errorf(format, args...))
	}
	switch gr {
	case apps.Resource("vminstances"):
		vm, prev := obj.(*apps.VMInstance), old.(*apps.VMInstance)
		if prev.Status.Node != node {
			return forbid("node %q may not write the status of a VM bound to node %q", node, prev.Status.Node)
		}
		if vm.Status.Node != prev.Status.Node || vm.Status.Incarnation != prev.Status.Incarnation || vm.Status.Datacenter != prev.Status.Datacenter {
			return forbid("a node may not rebind a VM (node, datacenter and incarnation are the scheduler's)")
		}
	case apps.Resource("vmdisks"):
		d, prev := obj.(*apps.VMDisk), old.(*apps.VMDisk)
		if prev.Status.Node != node {
			return forbid("node %q may not write the status of a disk placed on node %q (placement is the scheduler's)", node, prev.Status.Node)
		}
		if d.Status.Node != prev.Status.Node {
			return forbid("a node may not move a disk (status.node is the scheduler's)")
		}
	case kumo.Resource("goldenimages"):
		g, prev := obj.(*kumo.GoldenImage), old.(*kumo.GoldenImage)
		if prev.Spec.Source.HTTP == nil {
			return forbid("the status of an uploaded golden image is the server's")
		}
		if prev.Status.Phase == kumo.GoldenImageReady || prev.Status.Phase == kumo.GoldenImageFailed {
			return forbid("golden image is %s already: a node reports only the outcome of an undecided import", prev.Status.Phase)
		}
		if g.Status.Phase != kumo.GoldenImageReady && g.Status.Phase != kumo.GoldenImageFailed {
			return forbid("a node reports a golden image Ready or Failed, not %q", g.Status.Phase)
		}
	case kumo.Resource("nodes"):
		// the authorizer lets a node write its own Node only
	default:
		return forbid("node %q may not write the status of %s", node, gr)
	}
	return nil
}
