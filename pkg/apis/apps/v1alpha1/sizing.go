package v1alpha1

// Size is how big a VM is when spec.resources sizes it: CPUs vCPUs in Sockets sockets, Memory
// bytes.
type Size struct {
	CPUs    int64
	Sockets int64
	Memory  int64
}

// ExplicitSize returns the size spec.resources gives the VM, and false when resources does not
// size it (cpu or memory unset): the instance type then does. It expects a validated spec; an
// amount that does not parse counts as unset.
func (s *VMInstanceSpec) ExplicitSize() (Size, bool) {
	r := s.Resources
	if r == nil || !r.CPU.IsSet() || !r.Memory.IsSet() {
		return Size{}, false
	}
	cores, err1 := r.CPU.Quantity()
	mem, err2 := r.Memory.Quantity()
	if err1 != nil || err2 != nil {
		return Size{}, false
	}
	sockets := int64(1)
	if r.Sockets.IsSet() {
		q, err := r.Sockets.Quantity()
		if err != nil {
			return Size{}, false
		}
		sockets = q.Value()
	}
	return Size{CPUs: cores.Value() * sockets, Sockets: sockets, Memory: mem.Value()}, true
}
