package v1alpha1

import (
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// StorageClass says where a disk's data lives.
type StorageClass string

const (
	// StorageReplicated keeps three replicas, one per datacenter (Ceph RBD).
	StorageReplicated StorageClass = "replicated"
	// StorageLocal keeps the disk on the node where its VM first runs.
	StorageLocal StorageClass = "local"
)

// DefaultDiskSize is the size of a disk whose spec.storage is not given.
const DefaultDiskSize = "5Gi"

// VMDiskPhase is the coarse state of a disk.
type VMDiskPhase string

const (
	DiskPending   VMDiskPhase = "Pending"
	DiskImporting VMDiskPhase = "Importing"
	DiskReady     VMDiskPhase = "Ready"
	DiskFailed    VMDiskPhase = "Failed"
)

// +genclient
// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object

// VMDisk is a virtual disk of a tenant: imported from a URL, a golden image, an upload, a clone
// of another disk, or blank.
type VMDisk struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   VMDiskSpec   `json:"spec"`
	Status VMDiskStatus `json:"status,omitempty"`
}

// VMDiskSpec is what the tenant asks for.
type VMDiskSpec struct {
	// Source of the disk's content: exactly one of http, image, upload or disk; none for a blank disk.
	// +optional
	Source VMDiskSource `json:"source,omitempty"`
	// Optical attaches the disk as a CD-ROM (ISO installers); optical disks are not resized.
	// +optional
	Optical bool `json:"optical,omitempty"`
	// Storage is the disk's size; it may only grow. Default 5Gi.
	// +optional
	Storage *resource.Quantity `json:"storage,omitempty"`
	// StorageClass is replicated (default; three replicas, one per datacenter) or local (on one node).
	// It cannot change after creation.
	// +optional
	StorageClass StorageClass `json:"storageClass,omitempty"`
	// SchedulingClass names a scheduling class for the disk's workloads. Accepted for Hikube
	// compatibility; not used yet.
	// +optional
	SchedulingClass string `json:"schedulingClass,omitempty"`
}

// VMDiskSource names where a disk's initial content comes from.
type VMDiskSource struct {
	// HTTP downloads an image (raw, qcow2, vmdk, vhdx, vdi or iso; optionally gzip/xz-compressed).
	// +optional
	HTTP *HTTPSource `json:"http,omitempty"`
	// Image copies a golden image registered by the operator.
	// +optional
	Image *ImageSource `json:"image,omitempty"`
	// Upload waits for the content to be uploaded through the API (kumo upload vmdisk).
	// +optional
	Upload *UploadSource `json:"upload,omitempty"`
	// Disk clones another disk of the same tenant.
	// +optional
	Disk *DiskSource `json:"disk,omitempty"`
}

// HTTPSource is an image to download.
type HTTPSource struct {
	// URL of the image (http or https).
	URL string `json:"url"`
}

// ImageSource names a golden image.
type ImageSource struct {
	// Name of the golden image, e.g. ubuntu-2404.
	Name string `json:"name"`
}

// UploadSource marks a disk whose content is uploaded by the user. It has no fields.
type UploadSource struct{}

// DiskSource names a disk of the same tenant to clone.
type DiskSource struct {
	// Name of the VMDisk to clone, in the same namespace.
	Name string `json:"name"`
}

// VMDiskStatus is what Kumo observed of the disk.
type VMDiskStatus struct {
	// +optional
	Phase VMDiskPhase `json:"phase,omitempty"`
	// Progress of an import, e.g. "42%".
	// +optional
	Progress string `json:"progress,omitempty"`
	// Size is the disk's actual virtual size.
	// +optional
	Size *resource.Quantity `json:"size,omitempty"`
	// Node is the node the scheduler placed the disk on: for a local disk the node that holds it
	// (its VMs run there), for a replicated disk the node that prepares it and then the node of
	// the VM that writes it.
	// +optional
	Node string `json:"node,omitempty"`
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
}

// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object

// VMDiskList is a list of VMDisks.
type VMDiskList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []VMDisk `json:"items"`
}
