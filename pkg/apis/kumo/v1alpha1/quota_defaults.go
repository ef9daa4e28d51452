package v1alpha1

import "k8s.io/apimachinery/pkg/api/resource"

// The default quota of a tenant, for every field spec.quota leaves unset: room for a small team's
// VMs, far below what would crowd out other tenants of a modest cluster. An administrator raises
// (or lowers) any of them on the Tenant.
const (
	DefaultQuotaVMs               = 20
	DefaultQuotaCPUs              = 64
	DefaultQuotaMemory            = "256Gi"
	DefaultQuotaDisks             = 40
	DefaultQuotaLocalStorage      = "2Ti"
	DefaultQuotaReplicatedStorage = "2Ti"
	DefaultQuotaSnapshots         = 40
	DefaultQuotaPublicIPs         = 5
)

// SetDefaultsTenantQuota fills every unset field of a quota with its default.
func SetDefaultsTenantQuota(q *TenantResources) {
	count := func(p **int64, v int64) {
		if *p == nil {
			*p = &v
		}
	}
	size := func(p **resource.Quantity, v string) {
		if *p == nil {
			q := resource.MustParse(v)
			*p = &q
		}
	}
	count(&q.VMs, DefaultQuotaVMs)
	count(&q.CPUs, DefaultQuotaCPUs)
	size(&q.Memory, DefaultQuotaMemory)
	count(&q.Disks, DefaultQuotaDisks)
	if q.Storage == nil {
		q.Storage = &StorageResources{}
	}
	size(&q.Storage.Local, DefaultQuotaLocalStorage)
	size(&q.Storage.Replicated, DefaultQuotaReplicatedStorage)
	count(&q.Snapshots, DefaultQuotaSnapshots)
	count(&q.PublicIPs, DefaultQuotaPublicIPs)
}
