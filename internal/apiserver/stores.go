package apiserver

import (
	"context"
	"fmt"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apiserver/pkg/registry/generic"

	"kumo.dev/kumo/internal/apiserver/registry"
	kumo "kumo.dev/kumo/pkg/apis/kumo/v1alpha1"
)

// stores holds the storage of every served kind.
type stores struct {
	vmInstances, vmDisks             *registry.Storage
	instanceTypes                    *registry.Storage
	instanceProfiles, tenants, nodes *registry.Storage
	namespaces, events, tenantKeys   *registry.Storage
	goldenImages                     *registry.Storage
	leases                           *registry.Storage
	// gate serializes creates in a namespace with its termination (nsgate.go).
	gate namespaceGate
}

func (s *stores) build(opts generic.RESTOptionsGetter, refs *lookups) error {
	for _, b := range []struct {
		dst  **registry.Storage
		kind *registry.Kind
	}{
		{&s.vmInstances, vmInstanceKind(refs)}, {&s.vmDisks, vmDiskKind(refs)},
		{&s.instanceTypes, instanceTypeKind()}, {&s.instanceProfiles, instanceProfileKind()},
		{&s.tenants, tenantKind()}, {&s.nodes, nodeKind()},
		{&s.namespaces, namespaceKind()}, {&s.events, eventKind()}, {&s.tenantKeys, tenantKeyKind()}, {&s.goldenImages, goldenImageKind()},
		{&s.leases, leaseKind()},
	} {
		st, err := registry.NewStorage(b.kind, Scheme, opts)
		if err != nil {
			return fmt.Errorf("storage for %s: %w", b.kind.Resource, err)
		}
		*b.dst = st
	}
	s.gate.watchNamespaces(s.namespaces)
	return nil
}

func (s *stores) lookups() lookups {
	return lookups{
		namespaces: s.namespaces, tenants: s.tenants,
		instanceTypes: s.instanceTypes, instanceProfiles: s.instanceProfiles,
		vmInstances: s.vmInstances, vmDisks: s.vmDisks, nodes: s.nodes,
	}
}

// tenantUID finds a live tenant for the token authenticator, from the watch cache.
func (s *stores) tenantUID(ctx context.Context, name string) (string, bool, error) {
	obj, err := s.tenants.Get(ctx, name, &metav1.GetOptions{ResourceVersion: "0"})
	if apierrors.IsNotFound(err) {
		return "", false, nil
	}
	if err != nil {
		return "", false, err
	}
	t := obj.(*kumo.Tenant)
	return string(t.UID), t.DeletionTimestamp == nil, nil
}

// nodeLive says, for the token authenticator, whether Node name exists with UID uid and is not
// being deleted: a Node being deleted counts as gone, so that its tokens stop working at once.
// The watch cache answers first; when it disagrees (a Node registered a moment ago, or
// registered again) etcd decides.
func (s *stores) nodeLive(ctx context.Context, name, uid string) (bool, error) {
	live := func(rv string) (bool, error) {
		obj, err := s.nodes.Get(ctx, name, &metav1.GetOptions{ResourceVersion: rv})
		if apierrors.IsNotFound(err) {
			return false, nil
		}
		if err != nil {
			return false, err
		}
		n := obj.(*kumo.Node)
		return string(n.UID) == uid && n.DeletionTimestamp == nil, nil
	}
	if ok, err := live("0"); ok || err != nil {
		return ok, err
	}
	return live("")
}
