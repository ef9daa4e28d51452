package apiserver

import (
	"context"
	"fmt"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metainternalversion "k8s.io/apimachinery/pkg/apis/meta/internalversion"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apiserver/pkg/admission"
	genericapirequest "k8s.io/apiserver/pkg/endpoints/request"

	"kumo.dev/kumo/internal/quota"
	apps "kumo.dev/kumo/pkg/apis/apps/v1alpha1"
	kumo "kumo.dev/kumo/pkg/apis/kumo/v1alpha1"
)

// withinQuota refuses (403) a create or update of a VM or disk in a tenant's namespace that
// would take the tenant past its spec.quota, naming the limits, the usage and the request.
// The VM and disk stores serialize their writes per namespace (namespaceGate.counted) and the
// usage is read from etcd, so two concurrent creates cannot both take the last free unit. Like
// the namespace gate this holds within one API server.
func (a *admissionChecks) withinQuota(ctx context.Context, attr admission.Attributes) error {
	ns := attr.GetNamespace()
	tenant := kumo.TenantOfNamespace(ns)
	if tenant == "" {
		return nil
	}
	obj, err := a.l.tenants.Get(genericapirequest.WithNamespace(ctx, ""), tenant, &metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil // no tenant, no quota: admission refuses creates in its namespace anyway
	}
	if err != nil {
		return fmt.Errorf("read tenant %s for its quota: %w", tenant, err)
	}
	limits := quota.Limits(obj.(*kumo.Tenant).Spec.Quota)

	var requested, released quota.Amounts
	var skipVM, skipDisk string
	size := a.l.instanceTypeSize(ctx)
	switch o := attr.GetObject().(type) {
	case *apps.VMInstance:
		skipVM = o.Name
		if requested, err = quota.OfVM(o, size); err != nil {
			return err
		}
		if old, ok := attr.GetOldObject().(*apps.VMInstance); ok && old != nil {
			if released, err = quota.OfVM(old, size); err != nil {
				return err
			}
		}
	case *apps.VMDisk:
		skipDisk = o.Name
		requested = quota.OfDisk(o)
		if old, ok := attr.GetOldObject().(*apps.VMDisk); ok && old != nil {
			released = quota.OfDisk(old)
		}
	default:
		return nil
	}
	vms, err := a.l.vmsOf(ctx, ns)
	if err != nil {
		return err
	}
	list, err := a.l.vmDisks.List(genericapirequest.WithNamespace(ctx, ns), &metainternalversion.ListOptions{})
	if err != nil {
		return fmt.Errorf("list the disks of namespace %s: %w", ns, err)
	}
	others, err := quota.Usage(vms, list.(*apps.VMDiskList).Items, size, skipVM, skipDisk)
	if err != nil {
		return err
	}
	dims := quota.Exceeded(limits, others, requested, released)
	if len(dims) == 0 {
		return nil
	}
	return apierrors.NewForbidden(attr.GetResource().GroupResource(), attr.GetName(), fmt.Errorf(
		"exceeded quota of tenant %s: requested: %s, used: %s, limited: %s (an administrator sets the limits in the Tenant's spec.quota)",
		tenant, requested.Format(dims), others.Format(dims), limits.Format(dims)))
}

// instanceTypeSize sizes instance types for the quota, from the watch cache.
func (l *lookups) instanceTypeSize(ctx context.Context) quota.Sizer {
	return func(name string) (int64, int64, bool, error) {
		obj, err := l.instanceTypes.Get(ctx, name, &metav1.GetOptions{ResourceVersion: "0"})
		if apierrors.IsNotFound(err) {
			return 0, 0, false, nil
		}
		if err != nil {
			return 0, 0, false, err
		}
		t := obj.(*kumo.InstanceType)
		return int64(t.Spec.CPUs), t.Spec.Memory.Value(), true, nil
	}
}
