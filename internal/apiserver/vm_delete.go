package apiserver

import (
	"context"
	"errors"
	"fmt"
	"slices"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metainternalversion "k8s.io/apimachinery/pkg/apis/meta/internalversion"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apiserver/pkg/registry/rest"

	apps "kumo.dev/kumo/pkg/apis/apps/v1alpha1"
)

// vmDeleteAttempts bounds the retries of a VM deletion that raced with a binding or an exit.
const vmDeleteAttempts = 5

// vmStorage is the VMInstance store. Its Delete removes a VM at once when no incarnation of it may
// run (it holds no IncarnationFinalizer) and otherwise marks it deleted, leaving it to its node
// to stop the incarnation and report the end. The choice is made on the object read first and
// checked on the object actually deleted or marked: a binding that lands in between (which
// adds the finalizer) makes the attempt start over instead of deleting a VM whose QEMU may start.
type vmStorage struct{ *gatedStorage }

// errFinalizerMoved says that the VM gained or lost IncarnationFinalizer during a delete.
var errFinalizerMoved = errors.New("the VM was bound or released while being deleted")

func holdsIncarnation(obj runtime.Object) bool {
	vm, ok := obj.(*apps.VMInstance)
	return ok && slices.Contains(vm.Finalizers, apps.IncarnationFinalizer)
}

func (s *vmStorage) Delete(ctx context.Context, name string, validate rest.ValidateObjectFunc, options *metav1.DeleteOptions) (runtime.Object, bool, error) {
	for attempt := 1; ; attempt++ {
		cur, err := s.Storage.Get(ctx, name, &metav1.GetOptions{})
		if err != nil {
			return nil, false, err
		}
		held := holdsIncarnation(cur)
		check := func(ctx context.Context, obj runtime.Object) error {
			if holdsIncarnation(obj) != held {
				return errFinalizerMoved
			}
			if validate == nil {
				return nil
			}
			return validate(ctx, obj)
		}
		var opts *metav1.DeleteOptions
		if options != nil {
			opts = options.DeepCopy()
		}
		out, deleted, err := s.Storage.Delete(ctx, name, check, opts)
		if !errors.Is(err, errFinalizerMoved) {
			return out, deleted, err
		}
		if attempt == vmDeleteAttempts {
			return nil, false, apierrors.NewConflict(apps.Resource("vminstances"), name, fmt.Errorf("%w %d times; retry", errFinalizerMoved, attempt))
		}
	}
}

// DeleteCollection deletes each listed VM through Delete (the generic store would bypass it).
func (s *vmStorage) DeleteCollection(ctx context.Context, validate rest.ValidateObjectFunc, options *metav1.DeleteOptions, listOptions *metainternalversion.ListOptions) (runtime.Object, error) {
	obj, err := s.Storage.List(ctx, listOptions)
	if err != nil {
		return nil, err
	}
	list := obj.(*apps.VMInstanceList)
	out := &apps.VMInstanceList{ListMeta: list.ListMeta}
	for i := range list.Items {
		deleted, _, err := s.Delete(ctx, list.Items[i].Name, validate, options)
		if apierrors.IsNotFound(err) {
			continue
		}
		if err != nil {
			return nil, err // an API status, as the generic store returns it
		}
		if vm, ok := deleted.(*apps.VMInstance); ok {
			out.Items = append(out.Items, *vm)
		}
	}
	return out, nil
}
