package v1alpha1

import (
	"k8s.io/apimachinery/pkg/api/resource"
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
	// InstanceType names an InstanceType (e.g. u1.medium) that sizes the VM's vCPU and memory.
	InstanceType string `json:"instanceType"`
	// InstanceProfile names an InstanceProfile (ubuntu, centos, debian, fedora, windows) that picks
	// the VM's device models.
	// +optional
	InstanceProfile string `json:"instanceProfile,omitempty"`
	// Disks are the VMDisks attached to the VM; their order is the boot order. Each item is either
	// a disk name or an object with a name.
	// +optional
	// +listType=atomic
	Disks []VMDiskRef `json:"disks,omitempty"`
	// GPUs to pass through. Kumo's nodes offer none yet; the field is accepted empty so that
	// Hikube manifests apply unchanged.
	// +optional
	// +listType=atomic
	GPUs []GPURef `json:"gpus,omitempty"`
	// Resources is accepted empty for compatibility with Hikube manifests; sizing comes from
	// instanceType.
	// +optional
	Resources *Resources `json:"resources,omitempty"`
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
	Name string `json:"name"`
}

// Resources is Hikube's explicit sizing block.
type Resources struct {
	// +optional
	CPU *resource.Quantity `json:"cpu,omitempty"`
	// +optional
	Memory *resource.Quantity `json:"memory,omitempty"`
	// +optional
	Sockets *resource.Quantity `json:"sockets,omitempty"`
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
