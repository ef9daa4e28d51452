package v1alpha1

import (
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// +genclient
// +genclient:nonNamespaced
// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object

// InstanceType is a size a VM can have: a number of vCPUs and an amount of memory, both
// guaranteed. The S (1:2), U (1:4) and M (1:8) series of the product are built in; admins may add
// more.
type InstanceType struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec InstanceTypeSpec `json:"spec"`
}

// InstanceTypeSpec sizes a VM.
type InstanceTypeSpec struct {
	// CPUs is the number of vCPUs.
	CPUs int32 `json:"cpus"`
	// Memory is the guest's memory.
	Memory resource.Quantity `json:"memory"`
	// Series groups types by CPU:memory ratio, e.g. s1, u1, m1.
	// +optional
	Series string `json:"series,omitempty"`
	// Description says what the type is for.
	// +optional
	Description string `json:"description,omitempty"`
}

// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object

// InstanceTypeList is a list of InstanceTypes.
type InstanceTypeList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []InstanceType `json:"items"`
}

// OSType is the guest operating system family.
type OSType string

const (
	OSLinux   OSType = "linux"
	OSWindows OSType = "windows"
)

// Firmware is what boots the VM.
type Firmware string

const (
	FirmwareBIOS Firmware = "bios"
	FirmwareUEFI Firmware = "uefi"
)

// +genclient
// +genclient:nonNamespaced
// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object

// InstanceProfile is a guest OS profile: it picks the device models the guest boots with without
// extra drivers.
type InstanceProfile struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec InstanceProfileSpec `json:"spec"`
}

// InstanceProfileSpec is the device model a profile implies.
type InstanceProfileSpec struct {
	// OSType is linux or windows.
	OSType OSType `json:"osType"`
	// Machine is the QEMU machine type, e.g. q35.
	Machine string `json:"machine"`
	// Firmware is bios (SeaBIOS) or uefi (OVMF).
	Firmware Firmware `json:"firmware"`
	// DiskBus is virtio (virtio-blk), scsi (virtio-scsi) or sata.
	DiskBus string `json:"diskBus"`
	// NICModel is virtio (virtio-net) or e1000e.
	NICModel string `json:"nicModel"`
	// Clock is utc or localtime (Windows keeps its RTC in local time).
	Clock string `json:"clock"`
	// Tablet adds a USB tablet so the VNC pointer tracks absolutely.
	// +optional
	Tablet bool `json:"tablet,omitempty"`
	// HyperV enables Hyper-V enlightenments for Windows guests.
	// +optional
	HyperV bool `json:"hyperv,omitempty"`
}

// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object

// InstanceProfileList is a list of InstanceProfiles.
type InstanceProfileList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []InstanceProfile `json:"items"`
}

// TenantPhase is the lifecycle state of a tenant.
type TenantPhase string

const (
	TenantPending     TenantPhase = "Pending"
	TenantActive      TenantPhase = "Active"
	TenantTerminating TenantPhase = "Terminating"
)

// TenantNamespacePrefix prefixes a tenant's name to form its namespace.
const TenantNamespacePrefix = "tenant-"

// TenantFinalizer keeps a tenant until its namespace is gone.
const TenantFinalizer = "kumo.dev/tenant"

// +genclient
// +genclient:nonNamespaced
// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object

// Tenant owns one namespace, tenant-<name>, and everything in it. Its users reach only that
// namespace.
type Tenant struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   TenantSpec   `json:"spec,omitempty"`
	Status TenantStatus `json:"status,omitempty"`
}

// TenantSpec describes a tenant.
type TenantSpec struct {
	// DisplayName is a human name for the tenant.
	// +optional
	DisplayName string `json:"displayName,omitempty"`
	// Quota bounds what the tenant's namespace may hold; an unset field takes its default
	// (kumo get tenant NAME -o yaml shows them once set). See TenantResources.
	// +optional
	Quota TenantResources `json:"quota,omitempty"`
}

// TenantStatus is what Kumo observed of the tenant.
type TenantStatus struct {
	// +optional
	Phase TenantPhase `json:"phase,omitempty"`
	// Namespace is the tenant's namespace, tenant-<name>.
	// +optional
	Namespace string `json:"namespace,omitempty"`
	// Usage is what the tenant's namespace holds, counted like spec.quota.
	// +optional
	Usage TenantResources `json:"usage,omitempty"`
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object

// TenantList is a list of Tenants.
type TenantList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []Tenant `json:"items"`
}

// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object

// TenantToken asks for a bearer token for a user of a tenant (POST tenants/NAME/token), like
// Kubernetes' TokenRequest. The token is returned once and never stored.
type TenantToken struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   TenantTokenSpec   `json:"spec"`
	Status TenantTokenStatus `json:"status,omitempty"`
}

// TenantTokenSpec says whom the token is for.
type TenantTokenSpec struct {
	// User is the name the token authenticates as.
	User string `json:"user"`
	// ExpirationSeconds is the token's lifetime; default one year.
	// +optional
	ExpirationSeconds *int64 `json:"expirationSeconds,omitempty"`
}

// TenantTokenStatus carries the issued token.
type TenantTokenStatus struct {
	// Token is the bearer token.
	// +optional
	Token string `json:"token,omitempty"`
	// ExpirationTimestamp is when the token stops working.
	// +optional
	ExpirationTimestamp metav1.Time `json:"expirationTimestamp,omitempty"`
}

// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object

// NodeToken asks for a bearer token for a node's agent (POST nodes/NAME/token, admins only).
type NodeToken struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   NodeTokenSpec     `json:"spec,omitempty"`
	Status TenantTokenStatus `json:"status,omitempty"`
}

// NodeTokenSpec sets a node token's lifetime.
type NodeTokenSpec struct {
	// ExpirationSeconds is the token's lifetime; default one year.
	// +optional
	ExpirationSeconds *int64 `json:"expirationSeconds,omitempty"`
}

// NodeConditionReady is the condition that says a node's agent renews its lease.
const NodeConditionReady = "Ready"

// +genclient
// +genclient:nonNamespaced
// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object

// Node is a machine that runs VMs, registered by its agent.
type Node struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   NodeSpec   `json:"spec"`
	Status NodeStatus `json:"status,omitempty"`
}

// NodeSpec is what the agent and the operator declare of a node.
type NodeSpec struct {
	// Datacenter the node sits in.
	Datacenter string `json:"datacenter"`
	// Unschedulable keeps new VMs off the node.
	// +optional
	Unschedulable bool `json:"unschedulable,omitempty"`
}

// NodeStatus is what the agent reports.
type NodeStatus struct {
	// Capacity is the machine's vCPUs ("cpu") and memory ("memory").
	// +optional
	Capacity map[string]resource.Quantity `json:"capacity,omitempty"`
	// Allocatable is what VMs may use after the host's reserve.
	// +optional
	Allocatable map[string]resource.Quantity `json:"allocatable,omitempty"`
	// Addresses the server reaches the agent at.
	// +optional
	// +listType=atomic
	Addresses []string `json:"addresses,omitempty"`
	// QEMUVersion is the hypervisor's version.
	// +optional
	QEMUVersion string `json:"qemuVersion,omitempty"`
	// Accelerator is kvm or tcg.
	// +optional
	Accelerator string `json:"accelerator,omitempty"`
	// CPUModels are the CPU models the node's QEMU offers a guest (QMP query-cpu-definitions),
	// the values a VM's spec.cpuModel may take.
	// +optional
	// +listType=set
	CPUModels []string `json:"cpuModels,omitempty"`
	// AgentEndpoint is the agent's HTTPS URL for console and VNC streams.
	// +optional
	AgentEndpoint string `json:"agentEndpoint,omitempty"`
	// AgentCertificate is the agent's self-signed serving certificate (PEM); the server pins it.
	// +optional
	AgentCertificate string `json:"agentCertificate,omitempty"`
	// Images are the golden images present on the node.
	// +optional
	// +listType=set
	Images []string `json:"images,omitempty"`
	// StorageClasses are the disk storage classes the node can open (local, replicated).
	// +optional
	// +listType=set
	StorageClasses []string `json:"storageClasses,omitempty"`
	// LastHeartbeatTime is when the agent last renewed its lease.
	// +optional
	LastHeartbeatTime metav1.Time `json:"lastHeartbeatTime,omitempty"`
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object

// NodeList is a list of Nodes.
type NodeList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []Node `json:"items"`
}

// +genclient
// +genclient:nonNamespaced
// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object

// TenantKey is the key a tenant's disks are encrypted with. Kumo creates one per tenant; it is
// stored encrypted in etcd, readable only by admins, and handed to a node only for a VM of the
// tenant bound to that node.
type TenantKey struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// Key is the base64 of 32 random bytes, the passphrase of the tenant's LUKS volumes.
	Key string `json:"key"`
}

// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object

// TenantKeyList is a list of TenantKeys.
type TenantKeyList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []TenantKey `json:"items"`
}

// GoldenImagePhase is the state of a golden image's import.
type GoldenImagePhase string

const (
	GoldenImagePending   GoldenImagePhase = "Pending"
	GoldenImageImporting GoldenImagePhase = "Importing"
	GoldenImageReady     GoldenImagePhase = "Ready"
	GoldenImageFailed    GoldenImagePhase = "Failed"
)

// +genclient
// +genclient:nonNamespaced
// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object

// GoldenImage is an operating system image an admin imported once (kumo image import) and every
// tenant may start disks from (VMDisk spec.source.image.name). Nodes cache it.
type GoldenImage struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   GoldenImageSpec   `json:"spec"`
	Status GoldenImageStatus `json:"status,omitempty"`
}

// GoldenImageSpec says where the image comes from.
type GoldenImageSpec struct {
	// OS names the operating system, e.g. debian or ubuntu.
	// +optional
	OS string `json:"os,omitempty"`
	// MinSize is the smallest disk the image fits on.
	// +optional
	MinSize *resource.Quantity `json:"minSize,omitempty"`
	// Source is exactly one of http (download) or upload (kumo image import --file).
	Source GoldenImageSource `json:"source"`
}

// GoldenImageSource is where a golden image's content comes from.
type GoldenImageSource struct {
	// +optional
	HTTP *GoldenImageHTTP `json:"http,omitempty"`
	// +optional
	Upload *GoldenImageUpload `json:"upload,omitempty"`
}

// GoldenImageHTTP is an image to download.
type GoldenImageHTTP struct {
	URL string `json:"url"`
}

// GoldenImageUpload marks an image uploaded through goldenimages/NAME/upload. It has no fields.
type GoldenImageUpload struct{}

// GoldenImageStatus is what Kumo observed of the import.
type GoldenImageStatus struct {
	// +optional
	Phase GoldenImagePhase `json:"phase,omitempty"`
	// Format is the format the image arrived in.
	// +optional
	Format string `json:"format,omitempty"`
	// Size is the image's virtual size.
	// +optional
	Size *resource.Quantity `json:"size,omitempty"`
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object

// GoldenImageList is a list of GoldenImages.
type GoldenImageList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []GoldenImage `json:"items"`
}
