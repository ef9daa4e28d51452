// Package client gives Go programs (the kumo CLI, Kumo's controllers and agents, tests) typed
// access to Kumo's API: a scheme that knows every served kind, and REST clients per group.
package client

import (
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"

	appsv1alpha1 "kumo.dev/kumo/pkg/apis/apps/v1alpha1"
	kumov1alpha1 "kumo.dev/kumo/pkg/apis/kumo/v1alpha1"
)

var (
	// Scheme knows every kind Kumo serves: the Hikube kinds, Kumo's platform kinds, the two
	// core kinds Kumo keeps (Namespace, owned by tenants, and Event) and coordination Leases.
	Scheme = runtime.NewScheme()
	// Codecs encodes and decodes with Scheme.
	Codecs = serializer.NewCodecFactory(Scheme)
)

func init() {
	utilruntime.Must(appsv1alpha1.AddToScheme(Scheme))
	utilruntime.Must(kumov1alpha1.AddToScheme(Scheme))
	coreInternal := schema.GroupVersion{Group: "", Version: runtime.APIVersionInternal}
	for _, gv := range []schema.GroupVersion{corev1.SchemeGroupVersion, coreInternal} {
		Scheme.AddKnownTypes(gv, &corev1.Namespace{}, &corev1.NamespaceList{}, &corev1.Event{}, &corev1.EventList{})
	}
	utilruntime.Must(coordinationv1.AddToScheme(Scheme))
	Scheme.AddKnownTypes(schema.GroupVersion{Group: coordinationv1.GroupName, Version: runtime.APIVersionInternal}, &coordinationv1.Lease{}, &coordinationv1.LeaseList{})
	utilruntime.Must(Scheme.SetVersionPriority(coordinationv1.SchemeGroupVersion))
	utilruntime.Must(Scheme.SetVersionPriority(appsv1alpha1.SchemeGroupVersion))
	utilruntime.Must(Scheme.SetVersionPriority(kumov1alpha1.SchemeGroupVersion))
	utilruntime.Must(Scheme.SetVersionPriority(corev1.SchemeGroupVersion))

	// The unversioned meta types every API server registers, as k8s.io/sample-apiserver does.
	metav1.AddToGroupVersion(Scheme, schema.GroupVersion{Version: "v1"})
	Scheme.AddUnversionedTypes(schema.GroupVersion{Group: "", Version: "v1"},
		&metav1.Status{}, &metav1.APIVersions{}, &metav1.APIGroupList{},
		&metav1.APIGroup{}, &metav1.APIResourceList{},
	)
}
