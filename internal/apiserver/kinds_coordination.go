package apiserver

import (
	"context"

	coordinationv1 "k8s.io/api/coordination/v1"
	apimachineryvalidation "k8s.io/apimachinery/pkg/api/validation"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"kumo.dev/kumo/internal/apiserver/registry"
)

// leaseKind stores coordination.k8s.io/v1 Leases: the servers' leader election holds one
// (kumo-system/kumo-controllers), and client-go's leaderelection and kubectl use them unchanged.
// Only administrators and the servers themselves reach them (internal/auth).
func leaseKind() *registry.Kind {
	lease := func(o runtime.Object) *coordinationv1.Lease { return o.(*coordinationv1.Lease) }
	validate := func(_ context.Context, o runtime.Object) field.ErrorList {
		l := lease(o)
		errs := apimachineryvalidation.ValidateObjectMeta(&l.ObjectMeta, true, apimachineryvalidation.NameIsDNSSubdomain, field.NewPath("metadata"))
		if d := l.Spec.LeaseDurationSeconds; d != nil && *d <= 0 {
			errs = append(errs, field.Invalid(field.NewPath("spec", "leaseDurationSeconds"), *d, "must be greater than 0"))
		}
		if t := l.Spec.LeaseTransitions; t != nil && *t < 0 {
			errs = append(errs, field.Invalid(field.NewPath("spec", "leaseTransitions"), *t, "must be greater than or equal to 0"))
		}
		return errs
	}
	return &registry.Kind{
		Resource: coordinationv1.Resource("leases"), Singular: "lease", Namespaced: true, Version: "v1",
		New:      func() runtime.Object { return &coordinationv1.Lease{} },
		NewList:  func() runtime.Object { return &coordinationv1.LeaseList{} },
		Validate: validate,
		ValidateUpdate: func(ctx context.Context, o, old runtime.Object) field.ErrorList {
			errs := apimachineryvalidation.ValidateObjectMetaUpdate(&lease(o).ObjectMeta, &lease(old).ObjectMeta, field.NewPath("metadata"))
			return append(errs, validate(ctx, o)...)
		},
		Table: registry.Table{
			{Name: "Holder", Type: "string", Value: func(o runtime.Object) interface{} {
				if h := lease(o).Spec.HolderIdentity; h != nil {
					return *h
				}
				return ""
			}},
			{Name: "Renewed", Type: "string", Description: "Time since the holder last renewed the lease", Value: func(o runtime.Object) interface{} {
				if r := lease(o).Spec.RenewTime; r != nil {
					return registry.Age(metav1.Time{Time: r.Time})
				}
				return "<never>"
			}},
		},
	}
}
