package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// ExternalMethod says how a VM with external: true is exposed on its public IPv4.
type ExternalMethod string

const (
	// PortList opens exactly spec.externalPorts on the public IP.
	PortList ExternalMethod = "PortList"
	// WholeIP maps every port of the public IP to the VM.
	WholeIP ExternalMethod = "WholeIP"
)

// RunStrategy says when a VM should be running, as in KubeVirt.
type RunStrategy string

const (
	RunAlways         RunStrategy = "Always"
	RunHalted         RunStrategy = "Halted"
	RunManual         RunStrategy = "Manual"
	RunRerunOnFailure RunStrategy = "RerunOnFailure"
	RunOnce           RunStrategy = "Once"
)

// VMPhase is the coarse state of a VM.
type VMPhase string

const (
	VMPending   VMPhase = "Pending"
	VMScheduled VMPhase = "Scheduled"
	VMStarting  VMPhase = "Starting"
	VMRunning   VMPhase = "Running"
	VMStopping  VMPhase = "Stopping"
	VMStopped   VMPhase = "Stopped"
	VMFailed    VMPhase = "Failed"
)

// DefaultExternalPort is the port a PortList VM exposes when externalPorts is not given.
const DefaultExternalPort int32 = 22

// +genclient
// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object

// VMInstance is a tenant's virtual machine: the intent. Each start on a node is an incarnation,
// recorded in status.
type VMInstance struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   VMInstanceSpec   `json:"spec"`
	Status VMInstanceStatus `json:"status,omitempty"`
}

// VMInstanceSpec is what the tenant asks for, with Hikube's field names.
type VMInstanceSpec struct {
	// External gives the VM a public IPv4.
	// +optional
	External bool `json:"external,omitempty"`
	// ExternalMethod is PortList (default: only externalPorts are reachable) or WholeIP (all ports).
	// +optional
	ExternalMethod ExternalMethod `json:"externalMethod,omitempty"`
	// ExternalPorts are the TCP/UDP ports opened with PortList. Default [22].
	// +optional
	// +listType=atomic
	ExternalPorts []int32 `json:"externalPorts"`
	// RunStrategy is Always (default), Halted, Manual, RerunOnFailure or Once.
	// +optional
	RunStrategy RunStrategy `json:"runStrategy,omitempty"`
	// Running is the older boolean form: true means runStrategy Always, false means Halted.
	// +optional
	Running *bool `json:"running,omitempty"`
	// ExternalAllowICMP accepts ICMP to the VM's public IP in PortList mode (ping, path-MTU
	// discovery); it has no effect with WholeIP. Default true.
	// +optional
	ExternalAllowICMP *bool `json:"externalAllowICMP,omitempty"`
	// InstanceType names an InstanceType (e.g. u1.medium) that sizes the VM's vCPU and memory.
	// It is required unless resources sizes the VM (cpu and memory), which then overrides it.
	// +optional
	InstanceType string `json:"instanceType,omitempty"`
	// InstanceProfile names an InstanceProfile (ubuntu, centos, debian, fedora, windows) that picks
	// the VM's device models.
	// +optional
	InstanceProfile string `json:"instanceProfile,omitempty"`
	// Disks are the VMDisks attached to the VM; their order is the boot order. Each item is either
	// a disk name or an object with a name and an optional bus.
	// +optional
	// +listType=atomic
	Disks []VMDiskRef `json:"disks,omitempty"`
	// Networks are the tenant networks (subnets) the VM is attached to, by name. Accepted for
	// Hikube compatibility; attaching them is the network feature's work.
	// +optional
	// +listType=atomic
	Networks []NetworkRef `json:"networks,omitempty"`
	// Subnets is the deprecated name of networks.
	// +optional
	// +listType=atomic
	Subnets []NetworkRef `json:"subnets,omitempty"`
	// GPUs to pass through. Kumo's nodes offer none yet: a non-empty list is refused, an empty
	// one is accepted so that Hikube manifests apply unchanged.
	// +optional
	// +listType=atomic
	GPUs []GPURef `json:"gpus,omitempty"`
	// CPUModel is the CPU model the guest sees, as QEMU names it (e.g. host, max, qemu64,
	// Skylake-Server-v4, EPYC-v4). Empty: host passthrough under KVM, qemu64 under TCG. A named
	// model (not host or max) keeps the VM movable between nodes of different CPU generations.
	// It must be a model the nodes' QEMU offers (kumo get node -o yaml: status.cpuModels).
	// +optional
	CPUModel string `json:"cpuModel,omitempty"`
	// Firmware picks the boot firmware; empty fields take the instance profile's.
	// +optional
	Firmware *Firmware `json:"firmware,omitempty"`
	// Resources sizes the VM directly: cpu cores per socket, sockets and memory. Set, they
	// override instanceType (scheduled on guaranteed resources like a type); empty strings and
	// an empty block mean unset.
	// +optional
	Resources *Resources `json:"resources,omitempty"`
	// NetplanDHCP adds cloud-init network-config (version 2) that asks DHCP on every en* and eth*
	// interface, for images that configure no network themselves.
	// +optional
	NetplanDHCP bool `json:"netplanDhcp,omitempty"`
	// SchedulingClass names a scheduling class for the VM. Accepted for Hikube compatibility;
	// not used yet.
	// +optional
	SchedulingClass string `json:"schedulingClass,omitempty"`
	// SSHKeys are OpenSSH public keys installed for the default user through cloud-init.
	// +optional
	// +listType=atomic
	SSHKeys []string `json:"sshKeys,omitempty"`
	// CloudInit is user-data for cloud-init; it starts with #cloud-config or another cloud-init header.
	// +optional
	CloudInit string `json:"cloudInit,omitempty"`
	// CloudInitSeed is mixed into the instance-id: changing it makes cloud-init run again.
	// +optional
	CloudInitSeed string `json:"cloudInitSeed,omitempty"`
}

// GPURef names a GPU model.
type GPURef struct {
	// Name of the GPU resource, e.g. nvidia.com/GA102GL_A10.
	Name string `json:"name"`
}

// NetworkRef names a network of the tenant.
type NetworkRef struct {
	// Name of the network attachment.
	// +optional
	Name string `json:"name,omitempty"`
}

// Bootloader is the firmware a VM boots with.
type Bootloader string

const (
	// BootloaderBIOS is SeaBIOS.
	BootloaderBIOS Bootloader = "bios"
	// BootloaderUEFI is OVMF.
	BootloaderUEFI Bootloader = "uefi"
)

// Firmware is the VM's boot firmware, as in Cozystack's vm-instance.
type Firmware struct {
	// Bootloader is bios (SeaBIOS) or uefi (OVMF); empty takes the instance profile's.
	// +optional
	Bootloader Bootloader `json:"bootloader,omitempty"`
	// SecureBoot boots OVMF with Secure Boot on and Microsoft's keys enrolled (Debian's
	// OVMF_VARS_4M.ms.fd); it needs bootloader uefi and gives the VM a q35 machine with SMM.
	// +optional
	SecureBoot bool `json:"secureBoot,omitempty"`
	// EFIPersistent keeps the VM's UEFI variables (boot entries, enrolled keys) from one start to
	// the next. Without it every start begins with the firmware's pristine variables. Needs
	// bootloader uefi.
	// +optional
	EFIPersistent bool `json:"efiPersistent,omitempty"`
}

// Resources is Hikube's explicit sizing block. Each amount may be written as a number or a
// string; an empty string means unset.
type Resources struct {
	// CPU is the number of cores per socket (a whole number); the VM has cpu x sockets vCPUs.
	// +optional
	CPU Amount `json:"cpu,omitempty"`
	// Memory is the guest's memory, e.g. 4Gi (whole MiB).
	// +optional
	Memory Amount `json:"memory,omitempty"`
	// Sockets is the number of CPU sockets (a whole number, default 1).
	// +optional
	Sockets Amount `json:"sockets,omitempty"`
}

// VMInstanceStatus is what Kumo observed of the VM.
type VMInstanceStatus struct {
	// +optional
	Phase VMPhase `json:"phase,omitempty"`
	// Node runs the current incarnation.
	// +optional
	Node string `json:"node,omitempty"`
	// Datacenter of that node.
	// +optional
	Datacenter string `json:"datacenter,omitempty"`
	// Incarnation counts the starts of this VM; each start on a node gets a new number.
	// +optional
	Incarnation int64 `json:"incarnation,omitempty"`
	// IPAddresses of the VM: the private address first, then the public one if any.
	// +optional
	// +listType=atomic
	IPAddresses []string `json:"ipAddresses,omitempty"`
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// LastExit says how the most recent incarnation ended.
	// +optional
	LastExit *IncarnationExit `json:"lastExit,omitempty"`
	// RunRequest is the latest start or stop asked through the start/stop subresources for the
	// run strategies that do not encode it themselves (Manual, RerunOnFailure, Once).
	// +optional
	RunRequest *RunRequest `json:"runRequest,omitempty"`
	// RestartIncarnation asks the node to stop this incarnation so that a new one starts.
	// +optional
	RestartIncarnation int64 `json:"restartIncarnation,omitempty"`
	// Restarts counts incarnations started after the first.
	// +optional
	Restarts int32 `json:"restarts,omitempty"`
	// ConsecutiveFailures counts the incarnations in a row that ended in failure (crash or failed
	// start); a clean end, or a failure after a stable run, starts the count again. The wait
	// before the next start grows with it.
	// +optional
	ConsecutiveFailures int32 `json:"consecutiveFailures,omitempty"`
}

// ExitReason says why an incarnation ended.
type ExitReason string

const (
	// ExitSucceeded: the guest shut itself down cleanly.
	ExitSucceeded ExitReason = "Succeeded"
	// ExitFailed: QEMU or the guest crashed, or the start failed.
	ExitFailed ExitReason = "Failed"
	// ExitStopped: Kumo stopped it (stop, restart, delete, run strategy).
	ExitStopped ExitReason = "Stopped"
)

// IncarnationExit records the end of one incarnation.
type IncarnationExit struct {
	Incarnation int64 `json:"incarnation"`
	// Node is where the incarnation ran; it keeps the incarnation's logs (serial console,
	// QEMU) for a while after it ended.
	// +optional
	Node    string      `json:"node,omitempty"`
	Reason  ExitReason  `json:"reason"`
	Message string      `json:"message,omitempty"`
	Time    metav1.Time `json:"time"`
}

// RunAction is a start or a stop request.
type RunAction string

const (
	ActionStart RunAction = "Start"
	ActionStop  RunAction = "Stop"
)

// RunRequest is a start or stop asked by a user.
type RunRequest struct {
	Action RunAction   `json:"action"`
	Time   metav1.Time `json:"time"`
}

// Condition types of a VMInstance.
const (
	// ConditionScheduled: the current incarnation is bound to a node.
	ConditionScheduled = "Scheduled"
	// ConditionReady: the guest runs.
	ConditionReady = "Ready"
)

// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object

// VMStateChange is the body of POST vminstances/NAME/start, /stop and /restart.
type VMStateChange struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
}

// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object

// VMConsoleOptions are the query parameters of vminstances/NAME/console and /vnc.
type VMConsoleOptions struct {
	metav1.TypeMeta `json:",inline"`
	// ShowLog returns the serial output kept for the current incarnation instead of attaching.
	// +optional
	ShowLog bool `json:"showLog,omitempty"`
}

// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object

// VMInstanceList is a list of VMInstances.
type VMInstanceList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []VMInstance `json:"items"`
}
