package client

import (
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
)

// NewInformer watches one resource of a group client (all namespaces), optionally narrowed by a
// field selector such as "status.node=n1".
func NewInformer(rc rest.Interface, resource string, obj runtime.Object, fieldSelector string, resync time.Duration) cache.SharedIndexInformer {
	lw := cache.NewFilteredListWatchFromClient(rc, resource, metav1.NamespaceAll, func(o *metav1.ListOptions) {
		o.FieldSelector = fieldSelector
	})
	return cache.NewSharedIndexInformer(lw, obj, resync, cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc})
}
