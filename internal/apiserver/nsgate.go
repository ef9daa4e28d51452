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
	"k8s.io/apiserver/pkg/registry/rest"

	"kumo.dev/kumo/internal/apiserver/registry"
)

// namespaceGate closes the window between admission and the write of a create: admission
// checks that a namespace is not terminating, then the object is written. Without the gate a
// create admitted just before a tenant's namespace is marked Terminating could land after the
// tenant controller found the namespace empty, and outlive the tenant.
//
// Every create (and update) in a namespace holds the namespace's read lock from before
// admission until its write is committed or refused. Once a namespace has been written
// Terminating (or deleted) the write lock is taken and released, so that write returns only
// after every create that might have seen the namespace live has finished; creates that start
// later read the namespace from etcd in admission and are refused. The gate lives in one API
// server process: it makes deletion race-free with one server; with several, the tenant
// controller's cascade (it deletes what is left after the mark) still removes stragglers, but
// one could land after its last look.
type namespaceGate struct {
	stripes [64]sync.RWMutex
	// quota serializes the writes that a tenant's quota counts (admission_quota.go).
	quota [64]sync.Mutex
}

func (g *namespaceGate) lock(ns string) *sync.RWMutex { return &g.stripes[stripe(ns)] }

func stripe(ns string) int {
	h := fnv.New32a()
	_, _ = h.Write([]byte(ns))
	return int(h.Sum32() % 64)
}

// enter holds the read lock of the request's namespace until the returned func is called.
func (g *namespaceGate) enter(ctx context.Context) func() {
	ns, ok := genericapirequest.NamespaceFrom(ctx)
	if !ok || ns == "" {
		return func() {}
	}
	l := g.lock(ns)
	l.RLock()
	return l.RUnlock
}

// gatedStorage is a namespaced store whose creates and updates hold the namespace's read lock
// for the whole request. The store's own BeginCreate hook would not do: on the create-on-update
// path (server-side apply, which kumo apply uses) it finishes before the write is committed.
type gatedStorage struct {
	*registry.Storage
	gate *namespaceGate
	// counted: the kind's writes are charged to the tenant's quota, one at a time per namespace.
	counted bool
}

func (s *gatedStorage) Create(ctx context.Context, obj runtime.Object, createValidation rest.ValidateObjectFunc, options *metav1.CreateOptions) (runtime.Object, error) {
	defer s.gate.enter(ctx)()
	if s.counted {
		defer s.gate.serialize(ctx)()
	}
	return s.Storage.Create(ctx, obj, createValidation, options)
}

func (s *gatedStorage) Update(ctx context.Context, name string, objInfo rest.UpdatedObjectInfo, createValidation rest.ValidateObjectFunc, updateValidation rest.ValidateObjectUpdateFunc, forceAllowCreate bool, options *metav1.UpdateOptions) (runtime.Object, bool, error) {
	defer s.gate.enter(ctx)()
	if s.counted {
		defer s.gate.serialize(ctx)()
	}
	return s.Storage.Update(ctx, name, objInfo, createValidation, updateValidation, forceAllowCreate, options)
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

// gated returns st with its creates and updates behind the gate.
func (g *namespaceGate) gated(st *registry.Storage) *gatedStorage {
	return &gatedStorage{Storage: st, gate: g}
}

// counted returns st behind the gate, its creates and updates also serialized per namespace so
// that the quota check in admission and the write it admits are one step: two creates cannot
// both take the last free unit of a quota.
func (g *namespaceGate) counted(st *registry.Storage) *gatedStorage {
	return &gatedStorage{Storage: st, gate: g, counted: true}
}

// serialize holds the namespace's quota lock until the returned func is called. It is taken
// after the namespace's read lock, and drain never takes it, so the two cannot deadlock.
func (g *namespaceGate) serialize(ctx context.Context) func() {
	ns, ok := genericapirequest.NamespaceFrom(ctx)
	if !ok || ns == "" {
		return func() {}
	}
	l := &g.quota[stripe(ns)]
	l.Lock()
	return l.Unlock
}

// watchNamespaces makes every write that marks a namespace terminating, and its deletion,
// return only once the creates in flight in it have finished.
func (g *namespaceGate) watchNamespaces(namespaces *registry.Storage) {
	for _, st := range []*genericregistry.Store{namespaces.Store, namespaces.Status} {
		st.AfterUpdate = g.afterNamespaceUpdate
		st.AfterDelete = g.afterNamespaceDelete
	}
}
