// Package v1alpha1 holds the Hikube-compatible tenant-facing kinds, VMDisk and VMInstance, in the
// group apps.cozystack.io. Field names and defaults follow Hikube's manifests so that a user's
// existing YAML applies unchanged; status is Kumo's own.
//
// +k8s:deepcopy-gen=package
// +k8s:openapi-gen=true
// +k8s:openapi-model-package=io.cozystack.apps.v1alpha1
// +groupName=apps.cozystack.io
package v1alpha1
