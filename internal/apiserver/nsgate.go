package apiserver

import (
	"context"
	"hash/fnv"
	"sync"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	genericapirequest "k8s.io/apiserver/pkg/endpoints/request"
	genericregistry "k8s.io/apiserver/pkg/registry/generic/registry"
)

// namespaceGate closes the window between admission and the write of a create: admission
// checks that a namespace is not terminating, then the object is written. Without the gate a
// create admitted just before a tenant's namespace is marked Terminating could land after the
// tenant controller found the namespace empty, and outlive the tenant.
//
// Every create in a namespace holds the namespace's read lock from before admission until its
// write is committed (or refused); once a namespace has been written Terminating (or deleted), the
// write lock is taken and released, so the update returns only after every create that might
// have seen the namespace live has finished. Creates that start later read the namespace from
// etcd in admission and are refused. The gate lives in one API server process: it makes deletion
// race-free with one server; with several, the tenant controller's cascade (it deletes what is
// left after the mark) still removes stragglers, but one could land after its last look.
type namespaceGate struct {
	stripes [64]sync.RWMutex
}

func (g *namespaceGate) lock(ns string) *sync.RWMutex {
	h := fnv.New32a()
	_, _ = h.Write([]byte(ns))
	return &g.stripes[h.Sum32()%uint32(len(g.stripes))]
}

// beginCreate is a namespaced store's BeginCreate hook: it holds the namespace's read lock
// across admission and the write.
func (g *namespaceGate) beginCreate(ctx context.Context, _ runtime.Object, _ *metav1.CreateOptions) (genericregistry.FinishFunc, error) {
	ns, ok := genericapirequest.NamespaceFrom(ctx)
	if !ok || ns == "" {
		return func(context.Context, bool) {}, nil
	}
	l := g.lock(ns)
	l.RLock()
	var once sync.Once
	return func(context.Context, bool) { once.Do(l.RUnlock) }, nil
}

// drain waits until no create that began before now is still running in namespace ns.
func (g *namespaceGate) drain(ns string) {
	l := g.lock(ns)
	l.Lock()
	l.Unlock() //nolint:staticcheck // taking the lock is the point: it waits for the readers
}

// afterNamespaceUpdate drains the namespace once it has been written terminating.
func (g *namespaceGate) afterNamespaceUpdate(obj runtime.Object, _ *metav1.UpdateOptions) {
	if n, ok := obj.(*corev1.Namespace); ok && (n.Status.Phase == corev1.NamespaceTerminating || n.DeletionTimestamp != nil) {
		g.drain(n.Name)
	}
}

// afterNamespaceDelete drains a deleted namespace.
func (g *namespaceGate) afterNamespaceDelete(obj runtime.Object, _ *metav1.DeleteOptions) {
	if n, ok := obj.(*corev1.Namespace); ok {
		g.drain(n.Name)
	}
}

// install puts the gate on the namespaced stores and on the namespaces' own.
func (g *namespaceGate) install(s *stores) {
	for _, st := range []*genericregistry.Store{s.vmInstances.Store, s.vmDisks.Store, s.events.Store} {
		st.BeginCreate = g.beginCreate
	}
	for _, st := range []*genericregistry.Store{s.namespaces.Store, s.namespaces.Status} {
		st.AfterUpdate = g.afterNamespaceUpdate
		st.AfterDelete = g.afterNamespaceDelete
	}
}
