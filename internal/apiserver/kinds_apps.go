package apiserver

import (
	"context"
	"net/url"
	"slices"

	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/apiserver/pkg/storage"

	"kumo.dev/kumo/internal/apiserver/registry"
	apps "kumo.dev/kumo/pkg/apis/apps/v1alpha1"
	"kumo.dev/kumo/pkg/apis/apps/validation"
)

func vmInstanceKind(refs *lookups) *registry.Kind {
	vm := func(o runtime.Object) *apps.VMInstance { return o.(*apps.VMInstance) }
	return &registry.Kind{
		Resource: apps.Resource("vminstances"), Singular: "vminstance", ShortNames: []string{"vm", "vms"},
		Categories: []string{"all", "kumo"}, Namespaced: true, HasStatus: true, Version: apps.SchemeGroupVersion.Version,
		New:      func() runtime.Object { return &apps.VMInstance{} },
		NewList:  func() runtime.Object { return &apps.VMInstanceList{} },
		AttrFunc: statusAttrs(func(o runtime.Object) (string, string) { return vm(o).Status.Node, string(vm(o).Status.Phase) }),
		PrepareForCreate: func(o runtime.Object) {
			apps.SetDefaultsVMInstance(vm(o))
			vm(o).Status.Phase = apps.VMPending
			holdWhileIncarnationMayRun(vm(o)) // not bound: none
		},
		PrepareForUpdate: func(o, old runtime.Object) {
			reconcileRunning(vm(o), vm(old))
			// The finalizer is the API server's: a user's write neither adds nor removes it.
			setIncarnationFinalizer(vm(o), slices.Contains(vm(old).Finalizers, apps.IncarnationFinalizer))
		},
		PrepareForStatusUpdate: func(o, _ runtime.Object) { holdWhileIncarnationMayRun(vm(o)) },
		Validate: func(ctx context.Context, o runtime.Object) field.ErrorList {
			errs := append(validation.ValidateVMInstance(vm(o)), refs.vmReferences(ctx, vm(o), nil)...)
			return append(errs, refs.exclusiveDisks(ctx, vm(o), nil)...)
		},
		ValidateUpdate: func(ctx context.Context, o, old runtime.Object) field.ErrorList {
			errs := append(validation.ValidateVMInstanceUpdate(vm(o), vm(old)), refs.vmReferences(ctx, vm(o), vm(old))...)
			errs = append(errs, refs.detachedWhileBound(ctx, vm(o), vm(old))...)
			return append(errs, refs.exclusiveDisks(ctx, vm(o), vm(old))...)
		},
		Table: registry.Table{
			{Name: "Phase", Type: "string", Description: "Coarse state of the VM", Value: func(o runtime.Object) interface{} { return string(vm(o).Status.Phase) }},
			{Name: "Type", Type: "string", Description: "Instance type", Value: func(o runtime.Object) interface{} { return vm(o).Spec.InstanceType }},
			{Name: "Node", Type: "string", Description: "Node running the VM", Value: func(o runtime.Object) interface{} { return registry.OrNone(vm(o).Status.Node) }},
			{Name: "DC", Type: "string", Description: "Datacenter of the node", Value: func(o runtime.Object) interface{} { return registry.OrNone(vm(o).Status.Datacenter) }},
			{Name: "IP", Type: "string", Description: "The VM's addresses", Value: func(o runtime.Object) interface{} { return registry.Join(vm(o).Status.IPAddresses) }},
			{Name: "Profile", Type: "string", Priority: 1, Description: "Instance profile", Value: func(o runtime.Object) interface{} { return registry.OrNone(vm(o).Spec.InstanceProfile) }},
			{Name: "RunStrategy", Type: "string", Priority: 1, Description: "When the VM runs", Value: func(o runtime.Object) interface{} { return string(vm(o).Spec.RunStrategy) }},
			{Name: "Incarnation", Type: "integer", Priority: 1, Description: "Number of the VM's current start", Value: func(o runtime.Object) interface{} { return vm(o).Status.Incarnation }},
		},
	}
}

// holdWhileIncarnationMayRun makes the VM hold IncarnationFinalizer exactly while an incarnation
// of it is bound to a node that has not reported its end. Every binding, exit report and release
// is a status write, so the finalizer follows them in the same write: a deleted VM goes at once
// when no incarnation may run, and otherwise stays (keeping its disks taken) until the node
// reports the end, which then deletes it.
func holdWhileIncarnationMayRun(vm *apps.VMInstance) {
	setIncarnationFinalizer(vm, vm.Status.Node != "" && !vm.IncarnationEnded())
}

func setIncarnationFinalizer(vm *apps.VMInstance, hold bool) {
	has := slices.Contains(vm.Finalizers, apps.IncarnationFinalizer)
	switch {
	case hold && !has:
		vm.Finalizers = append(vm.Finalizers, apps.IncarnationFinalizer)
	case !hold && has:
		vm.Finalizers = slices.DeleteFunc(vm.Finalizers, func(f string) bool { return f == apps.IncarnationFinalizer })
		if len(vm.Finalizers) == 0 {
			vm.Finalizers = nil
		}
	}
}

// reconcileRunning keeps the older boolean running and runStrategy in agreement when only one
// of them changes: a manifest that flips running: false also moves runStrategy to Halted, and a
// change of runStrategy drops a stale running.
func reconcileRunning(vm, old *apps.VMInstance) {
	s, o := &vm.Spec, &old.Spec
	apps.SetDefaultsVMInstance(vm)
	runningChanged := (s.Running == nil) != (o.Running == nil) || (s.Running != nil && o.Running != nil && *s.Running != *o.Running)
	switch {
	case runningChanged && s.Running != nil && s.RunStrategy == o.RunStrategy:
		s.RunStrategy = apps.RunStrategyFor(*s.Running)
	case !runningChanged && s.Running != nil && s.RunStrategy != o.RunStrategy:
		s.Running = nil
	}
}

func vmDiskKind(refs *lookups) *registry.Kind {
	disk := func(o runtime.Object) *apps.VMDisk { return o.(*apps.VMDisk) }
	return &registry.Kind{
		Resource: apps.Resource("vmdisks"), Singular: "vmdisk", ShortNames: []string{"vmd"},
		Categories: []string{"all", "kumo"}, Namespaced: true, HasStatus: true, Version: apps.SchemeGroupVersion.Version,
		New:      func() runtime.Object { return &apps.VMDisk{} },
		NewList:  func() runtime.Object { return &apps.VMDiskList{} },
		AttrFunc: statusAttrs(func(o runtime.Object) (string, string) { return disk(o).Status.Node, string(disk(o).Status.Phase) }),
		PrepareForCreate: func(o runtime.Object) {
			apps.SetDefaultsVMDisk(disk(o))
			disk(o).Status.Phase = apps.DiskPending
		},
		PrepareForUpdate: func(o, old runtime.Object) { apps.SetDefaultsVMDisk(disk(o)) },
		Validate: func(ctx context.Context, o runtime.Object) field.ErrorList {
			return append(validation.ValidateVMDisk(disk(o)), refs.cloneSource(ctx, disk(o))...)
		},
		ValidateUpdate: func(_ context.Context, o, old runtime.Object) field.ErrorList {
			return validation.ValidateVMDiskUpdate(disk(o), disk(old))
		},
		Table: registry.Table{
			{Name: "Phase", Type: "string", Description: "Coarse state of the disk", Value: func(o runtime.Object) interface{} { return string(disk(o).Status.Phase) }},
			{Name: "Size", Type: "string", Description: "Requested size", Value: func(o runtime.Object) interface{} {
				if s := disk(o).Spec.Storage; s != nil {
					return s.String()
				}
				return "<none>"
			}},
			{Name: "Class", Type: "string", Description: "Storage class", Value: func(o runtime.Object) interface{} { return string(disk(o).Spec.StorageClass) }},
			{Name: "Progress", Type: "string", Description: "Import progress", Value: func(o runtime.Object) interface{} { return registry.OrNone(disk(o).Status.Progress) }},
			{Name: "Source", Type: "string", Priority: 1, Description: "Where the content comes from", Value: func(o runtime.Object) interface{} { return sourceSummary(disk(o).Spec.Source) }},
			{Name: "Node", Type: "string", Priority: 1, Description: "Node holding (local) or preparing/writing (replicated) the disk", Value: func(o runtime.Object) interface{} { return registry.OrNone(disk(o).Status.Node) }},
		},
	}
}

func sourceSummary(s apps.VMDiskSource) string {
	switch {
	case s.HTTP != nil:
		// Objects stored before URLs with credentials were refused must not show them.
		if u, err := url.Parse(s.HTTP.URL); err == nil {
			return "http:" + u.Redacted()
		}
		return "http:(unparsable URL)"
	case s.Image != nil:
		return "image:" + s.Image.Name
	case s.Upload != nil:
		return "upload"
	case s.Disk != nil:
		return "disk:" + s.Disk.Name
	}
	return "blank"
}

// statusAttrs lets clients select objects by status.node and status.phase (agents watch the VMs
// bound to their node with fieldSelector=status.node=NAME).
func statusAttrs(nodePhase func(runtime.Object) (string, string)) storage.AttrFunc {
	return func(o runtime.Object) (labels.Set, fields.Set, error) {
		m, err := meta.Accessor(o)
		if err != nil {
			return nil, nil, err
		}
		node, phase := nodePhase(o)
		f := fields.Set{"metadata.name": m.GetName(), "metadata.namespace": m.GetNamespace(), "status.node": node, "status.phase": phase}
		return m.GetLabels(), f, nil
	}
}
