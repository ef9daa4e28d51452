package apiserver

import (
	"context"
	"errors"
	"fmt"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	genericapirequest "k8s.io/apiserver/pkg/endpoints/request"
	"k8s.io/apiserver/pkg/registry/rest"

	"kumo.dev/kumo/internal/apiserver/registry"
	"kumo.dev/kumo/internal/auth"
	apps "kumo.dev/kumo/pkg/apis/apps/v1alpha1"
	kumo "kumo.dev/kumo/pkg/apis/kumo/v1alpha1"
)

// vmDiskKeyREST serves GET vmdisks/NAME/diskkey: the tenant's disk key, to the node the disk is
// placed on (status.node, set by the scheduler) so that it can prepare the disk before any VM
// uses it, and to no one else.
type vmDiskKeyREST struct {
	disks, keys *registry.Storage
}

var (
	_ rest.Getter                   = &vmDiskKeyREST{}
	_ rest.GroupVersionKindProvider = &vmDiskKeyREST{}
)

func (r *vmDiskKeyREST) New() runtime.Object { return &kumo.TenantKey{} }
func (r *vmDiskKeyREST) Destroy()            {}

func (r *vmDiskKeyREST) Get(ctx context.Context, name string, _ *metav1.GetOptions) (runtime.Object, error) {
	u, _ := genericapirequest.UserFrom(ctx)
	node := ""
	if u != nil {
		node = auth.NodeOf(u)
	}
	if node == "" {
		return nil, apierrors.NewForbidden(apps.Resource("vmdisks/diskkey"), name, errors.New("only the node the disk is placed on gets its disk key"))
	}
	got, err := r.disks.Get(ctx, name, &metav1.GetOptions{})
	if err != nil {
		return nil, err
	}
	d := got.(*apps.VMDisk)
	if d.Status.Node != node {
		return nil, apierrors.NewForbidden(apps.Resource("vmdisks/diskkey"), name, fmt.Errorf("the disk is placed on node %q, not %q", d.Status.Node, node))
	}
	tenant := kumo.TenantOfNamespace(d.Namespace)
	key, err := r.keys.Get(genericapirequest.WithNamespace(ctx, ""), tenant, &metav1.GetOptions{})
	if err != nil {
		return nil, apierrors.NewServiceUnavailable(fmt.Sprintf("the disk key of tenant %s is not ready: %v", tenant, err))
	}
	return key, nil
}

// GroupVersionKind says the subresource returns a kumo.dev TenantKey.
func (r *vmDiskKeyREST) GroupVersionKind(schema.GroupVersion) schema.GroupVersionKind {
	return kumo.SchemeGroupVersion.WithKind("TenantKey")
}
