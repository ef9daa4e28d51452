package quota

import (
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/validation/field"

	kumo "kumo.dev/kumo/pkg/apis/kumo/v1alpha1"
)

// Validate checks a quota: counts and sizes are not negative, sizes are whole bytes.
func Validate(q kumo.TenantResources, path *field.Path) field.ErrorList {
	var errs field.ErrorList
	count := func(name string, p *int64) {
		if p != nil && *p < 0 {
			errs = append(errs, field.Invalid(path.Child(name), *p, "must not be negative"))
		}
	}
	size := func(p *resource.Quantity, fp *field.Path) {
		switch {
		case p == nil:
		case p.Sign() < 0:
			errs = append(errs, field.Invalid(fp, p.String(), "must not be negative"))
		case p.CmpInt64(1<<62) > 0:
			errs = append(errs, field.Invalid(fp, p.String(), "must be at most 4Ei"))
		case p.Cmp(*resource.NewQuantity(p.Value(), resource.BinarySI)) != 0:
			errs = append(errs, field.Invalid(fp, p.String(), "must be a whole number of bytes, e.g. 64Gi"))
		}
	}
	count("vms", q.VMs)
	count("cpus", q.CPUs)
	size(q.Memory, path.Child("memory"))
	count("disks", q.Disks)
	if q.Storage != nil {
		size(q.Storage.Local, path.Child("storage", "local"))
		size(q.Storage.Replicated, path.Child("storage", "replicated"))
	}
	count("snapshots", q.Snapshots)
	count("publicIPs", q.PublicIPs)
	return errs
}

// Column renders a tenant's usage of a dimension against its quota, e.g. "3/20" or "12Gi/256Gi".
func Column(t *kumo.Tenant, d Dimension) string {
	return FromResources(t.Status.Usage).value(d) + "/" + Limits(t.Spec.Quota).value(d)
}
