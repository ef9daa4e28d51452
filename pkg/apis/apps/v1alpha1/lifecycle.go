package v1alpha1

// WantsRunning says whether the VM should have a running incarnation now, from its run strategy,
// the user's start/stop requests and how its last incarnation ended — KubeVirt's semantics:
//   - Always: always (a guest shutdown or crash is followed by a new incarnation);
//   - Halted: never;
//   - Manual: only after `kumo start`, until `kumo stop` or the guest stops;
//   - RerunOnFailure: until the guest shuts down cleanly or `kumo stop`; crashes rerun it;
//   - Once: until its first incarnation ends, however it ends.
//
// A restart (kumo restart) ends an incarnation with reason Stopped and a restart request; it
// does not count as the end for Manual, RerunOnFailure or Once.
func (vm *VMInstance) WantsRunning() bool {
	s := vm.Status
	startedAfter := func(e *IncarnationExit) bool {
		return s.RunRequest != nil && s.RunRequest.Action == ActionStart && e != nil && s.RunRequest.Time.After(e.Time.Time)
	}
	stopRequested := s.RunRequest != nil && s.RunRequest.Action == ActionStop
	restarted := s.LastExit != nil && s.RestartIncarnation != 0 && s.RestartIncarnation == s.LastExit.Incarnation
	switch vm.Spec.RunStrategy {
	case RunAlways, "":
		return true
	case RunHalted:
		return false
	case RunManual:
		if s.RunRequest == nil || stopRequested {
			return false
		}
		return s.LastExit == nil || restarted || startedAfter(s.LastExit) || !s.RunRequest.Time.Before(&s.LastExit.Time)
	case RunRerunOnFailure:
		if stopRequested {
			return false
		}
		if s.LastExit == nil || restarted || startedAfter(s.LastExit) {
			return true
		}
		return s.LastExit.Reason != ExitSucceeded
	case RunOnce:
		if stopRequested {
			return false
		}
		return s.LastExit == nil || restarted || startedAfter(s.LastExit)
	}
	return false
}

// IncarnationEnded says whether the current incarnation has ended (its node reported the exit).
func (vm *VMInstance) IncarnationEnded() bool {
	return vm.Status.LastExit != nil && vm.Status.LastExit.Incarnation == vm.Status.Incarnation
}

// IncarnationFinalizer keeps a deleted VMInstance until its bound incarnation has ended: while
// the object exists, admission, the scheduler and the disk delete guard count its disks as in
// use, so no other VM opens them while its QEMU may still write them. The API server keeps it on
// a VM exactly while an incarnation is bound and its node has not reported the end (a VM that
// is not bound is deleted at once); users cannot add or remove it.
const IncarnationFinalizer = "kumo.dev/incarnation"
