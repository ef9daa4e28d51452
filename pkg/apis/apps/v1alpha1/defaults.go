package v1alpha1

import "k8s.io/apimachinery/pkg/api/resource"

// SetDefaultsVMDisk fills the fields Hikube defaults: storage 5Gi, storageClass replicated.
func SetDefaultsVMDisk(d *VMDisk) {
	if d.Spec.Storage == nil {
		q := resource.MustParse(DefaultDiskSize)
		d.Spec.Storage = &q
	}
	if d.Spec.StorageClass == "" {
		d.Spec.StorageClass = StorageReplicated
	}
}

// SetDefaultsVMInstance fills externalMethod, externalPorts and runStrategy. The older boolean
// running, when given and runStrategy is not, decides runStrategy.
func SetDefaultsVMInstance(vm *VMInstance) {
	s := &vm.Spec
	if s.ExternalMethod == "" {
		s.ExternalMethod = PortList
	}
	if s.ExternalPorts == nil {
		s.ExternalPorts = []int32{DefaultExternalPort}
	}
	if s.RunStrategy == "" {
		s.RunStrategy = RunAlways
		if s.Running != nil && !*s.Running {
			s.RunStrategy = RunHalted
		}
	}
}

// RunStrategyFor maps the boolean running to its run strategy.
func RunStrategyFor(running bool) RunStrategy {
	if running {
		return RunAlways
	}
	return RunHalted
}
