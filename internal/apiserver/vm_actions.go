package apiserver

import (
	"context"
	"fmt"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apiserver/pkg/registry/rest"

	"kumo.dev/kumo/internal/apiserver/registry"
	apps "kumo.dev/kumo/pkg/apis/apps/v1alpha1"
)

// vmAction serves POST vminstances/NAME/{start,stop,restart}, like virtctl's subresources:
// start and stop flip runStrategy between Always and Halted, or record a run request for the
// strategies that leave starting to the user (Manual, RerunOnFailure, Once); restart asks the node
// to end the current incarnation so that a new one starts.
type vmAction struct {
	action string
	vms    *registry.Storage
}

var _ rest.NamedCreater = &vmAction{}

func (a *vmAction) New() runtime.Object { return &apps.VMStateChange{} }
func (a *vmAction) Destroy()            {}

func (a *vmAction) Create(ctx context.Context, name string, obj runtime.Object, _ rest.ValidateObjectFunc, _ *metav1.CreateOptions) (runtime.Object, error) {
	got, err := a.vms.Get(ctx, name, &metav1.GetOptions{})
	if err != nil {
		return nil, err
	}
	vm := got.(*apps.VMInstance)
	conflict := func(format string, args ...interface{}) error {
		return apierrors.NewConflict(apps.Resource("vminstances"), name, fmt.Errorf(format, args...))
	}
	now := metav1.Now()
	switch a.action {
	case "start":
		switch vm.Spec.RunStrategy {
		case apps.RunAlways:
			return nil, conflict("VM is already set to run (runStrategy Always)")
		case apps.RunHalted:
			err = a.updateSpec(ctx, name, func(vm *apps.VMInstance) { vm.Spec.RunStrategy, vm.Spec.Running = apps.RunAlways, nil })
		default:
			if vm.Status.Phase == apps.VMRunning || vm.Status.Phase == apps.VMStarting {
				return nil, conflict("VM is already %s", vm.Status.Phase)
			}
			err = a.updateStatus(ctx, name, func(vm *apps.VMInstance) {
				vm.Status.RunRequest = &apps.RunRequest{Action: apps.ActionStart, Time: now}
			})
		}
	case "stop":
		switch vm.Spec.RunStrategy {
		case apps.RunHalted:
			return nil, conflict("VM is already stopped (runStrategy Halted)")
		case apps.RunAlways, apps.RunRerunOnFailure:
			err = a.updateSpec(ctx, name, func(vm *apps.VMInstance) { vm.Spec.RunStrategy, vm.Spec.Running = apps.RunHalted, nil })
		default:
			err = a.updateStatus(ctx, name, func(vm *apps.VMInstance) {
				vm.Status.RunRequest = &apps.RunRequest{Action: apps.ActionStop, Time: now}
			})
		}
	case "restart":
		if vm.Status.Node == "" || (vm.Status.Phase != apps.VMRunning && vm.Status.Phase != apps.VMStarting) {
			return nil, conflict("VM is not running (phase %s); use start", vm.Status.Phase)
		}
		inc := vm.Status.Incarnation
		err = a.updateStatus(ctx, name, func(vm *apps.VMInstance) { vm.Status.RestartIncarnation = inc })
	}
	if err != nil {
		return nil, err
	}
	return obj, nil
}

func (a *vmAction) updateSpec(ctx context.Context, name string, mutate func(*apps.VMInstance)) error {
	return update(ctx, a.vms.Store, name, func(o runtime.Object) { mutate(o.(*apps.VMInstance)) })
}

func (a *vmAction) updateStatus(ctx context.Context, name string, mutate func(*apps.VMInstance)) error {
	return update(ctx, a.vms.Status, name, func(o runtime.Object) { mutate(o.(*apps.VMInstance)) })
}

type updater interface {
	Update(ctx context.Context, name string, objInfo rest.UpdatedObjectInfo, createValidation rest.ValidateObjectFunc, updateValidation rest.ValidateObjectUpdateFunc, forceAllowCreate bool, options *metav1.UpdateOptions) (runtime.Object, bool, error)
}

// update applies mutate to a copy of the stored object with optimistic concurrency (the store
// retries on conflict).
func update(ctx context.Context, store updater, name string, mutate func(runtime.Object)) error {
	info := rest.DefaultUpdatedObjectInfo(nil, func(ctx context.Context, _, stored runtime.Object) (runtime.Object, error) {
		obj := stored.DeepCopyObject()
		mutate(obj)
		return obj, nil
	})
	_, _, err := store.Update(ctx, name, info, nil, rest.ValidateAllObjectUpdateFunc, false, &metav1.UpdateOptions{})
	return err
}
