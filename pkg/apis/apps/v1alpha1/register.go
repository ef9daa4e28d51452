package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// GroupName is the API group of the Hikube-compatible kinds.
const GroupName = "apps.cozystack.io"

// SchemeGroupVersion is the group version the kinds are served under.
var SchemeGroupVersion = schema.GroupVersion{Group: GroupName, Version: "v1alpha1"}

// Resource qualifies a resource name with this group.
func Resource(resource string) schema.GroupResource {
	return SchemeGroupVersion.WithResource(resource).GroupResource()
}

// AddToScheme registers the kinds under v1alpha1 and under the internal version: there are no
// conversions, the versioned types are also the internal ones.
func AddToScheme(scheme *runtime.Scheme) error {
	for _, gv := range []schema.GroupVersion{SchemeGroupVersion, {Group: GroupName, Version: runtime.APIVersionInternal}} {
		scheme.AddKnownTypes(gv, &VMDisk{}, &VMDiskList{}, &VMInstance{}, &VMInstanceList{})
	}
	metav1.AddToGroupVersion(scheme, SchemeGroupVersion)
	scheme.AddTypeDefaultingFunc(&VMDisk{}, func(o interface{}) { SetDefaultsVMDisk(o.(*VMDisk)) })
	scheme.AddTypeDefaultingFunc(&VMInstance{}, func(o interface{}) { SetDefaultsVMInstance(o.(*VMInstance)) })
	return nil
}
