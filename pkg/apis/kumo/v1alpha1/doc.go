// Package v1alpha1 holds Kumo's platform kinds in the group kumo.dev: instance types and
// profiles (what a VM may be), tenants (who owns what) and nodes (where VMs run).
//
// +k8s:deepcopy-gen=package
// +k8s:openapi-gen=true
// +k8s:openapi-model-package=dev.kumo.v1alpha1
// +groupName=kumo.dev
package v1alpha1
