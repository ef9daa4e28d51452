package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// GroupName is the API group of Kumo's platform kinds.
const GroupName = "kumo.dev"

// SchemeGroupVersion is the group version the kinds are served under.
var SchemeGroupVersion = schema.GroupVersion{Group: GroupName, Version: "v1alpha1"}

// Resource qualifies a resource name with this group.
func Resource(resource string) schema.GroupResource {
	return SchemeGroupVersion.WithResource(resource).GroupResource()
}

// AddToScheme registers the kinds under v1alpha1 and, without conversions, as the internal version.
func AddToScheme(scheme *runtime.Scheme) error {
	for _, gv := range []schema.GroupVersion{SchemeGroupVersion, {Group: GroupName, Version: runtime.APIVersionInternal}} {
		scheme.AddKnownTypes(gv,
			&InstanceType{}, &InstanceTypeList{},
			&InstanceProfile{}, &InstanceProfileList{},
			&Tenant{}, &TenantList{}, &TenantToken{},
			&Node{}, &NodeList{}, &NodeToken{},
			&TenantKey{}, &TenantKeyList{},
			&GoldenImage{}, &GoldenImageList{},
		)
	}
	metav1.AddToGroupVersion(scheme, SchemeGroupVersion)
	return nil
}
