package v1alpha1

import (
	"fmt"
	"net/url"

	"k8s.io/apimachinery/pkg/conversion"

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
		scheme.AddKnownTypes(gv, &VMDisk{}, &VMDiskList{}, &VMInstance{}, &VMInstanceList{}, &VMStateChange{}, &VMConsoleOptions{})
	}
	metav1.AddToGroupVersion(scheme, SchemeGroupVersion)
	if err := scheme.AddFieldLabelConversionFunc(SchemeGroupVersion.WithKind("VMInstance"), fieldLabel("status.node", "status.phase")); err != nil {
		return err
	}
	if err := scheme.AddFieldLabelConversionFunc(SchemeGroupVersion.WithKind("VMDisk"), fieldLabel("status.node", "status.phase")); err != nil {
		return err
	}
	// Query parameters of the console and vnc subresources.
	if err := scheme.AddConversionFunc((*url.Values)(nil), (*VMConsoleOptions)(nil), func(a, b interface{}, _ conversion.Scope) error {
		v, o := a.(*url.Values), b.(*VMConsoleOptions)
		o.ShowLog = v.Get("showLog") == "true"
		return nil
	}); err != nil {
		return err
	}
	scheme.AddTypeDefaultingFunc(&VMDisk{}, func(o interface{}) { SetDefaultsVMDisk(o.(*VMDisk)) })
	scheme.AddTypeDefaultingFunc(&VMInstance{}, func(o interface{}) { SetDefaultsVMInstance(o.(*VMInstance)) })
	return nil
}

// fieldLabel accepts metadata.name, metadata.namespace and the given fields in field selectors.
func fieldLabel(extra ...string) func(label, value string) (string, string, error) {
	return func(label, value string) (string, string, error) {
		if label == "metadata.name" || label == "metadata.namespace" {
			return label, value, nil
		}
		for _, e := range extra {
			if label == e {
				return label, value, nil
			}
		}
		return "", "", fmt.Errorf("field label not supported: %s", label)
	}
}
