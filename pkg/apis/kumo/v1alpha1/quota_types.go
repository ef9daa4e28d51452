package v1alpha1

import (
	"k8s.io/apimachinery/pkg/api/resource"
)

// TenantResources counts what a tenant holds, or may hold: the Tenant's spec.quota sets the
// limits, its status.usage reports what its namespace holds now. A VM counts its instance
// type's vCPU and memory whether it runs or not (as cloud quotas do): a stopped VM can always
// start again without hitting its tenant's quota.
type TenantResources struct {
	// VMs is the number of VMInstances.
	// +optional
	VMs *int64 `json:"vms,omitempty"`
	// CPUs is the total vCPU of the VMs' instance types.
	// +optional
	CPUs *int64 `json:"cpus,omitempty"`
	// Memory is the total memory of the VMs' instance types.
	// +optional
	Memory *resource.Quantity `json:"memory,omitempty"`
	// Disks is the number of VMDisks.
	// +optional
	Disks *int64 `json:"disks,omitempty"`
	// Storage is the total spec.storage of the VMDisks, per storage class.
	// +optional
	Storage *StorageResources `json:"storage,omitempty"`
	// Snapshots is the number of disk snapshots (counted once snapshots exist).
	// +optional
	Snapshots *int64 `json:"snapshots,omitempty"`
	// PublicIPs is the number of public IPv4 addresses: one per VM with spec.external.
	// +optional
	PublicIPs *int64 `json:"publicIPs,omitempty"`
}

// StorageResources is disk bytes per storage class.
type StorageResources struct {
	// Local is the total size of local disks.
	// +optional
	Local *resource.Quantity `json:"local,omitempty"`
	// Replicated is the total size of replicated (Ceph) disks.
	// +optional
	Replicated *resource.Quantity `json:"replicated,omitempty"`
}
