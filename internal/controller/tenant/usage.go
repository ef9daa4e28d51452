package tenant

import (
	"fmt"

	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/tools/cache"

	"kumo.dev/kumo/internal/quota"
	apps "kumo.dev/kumo/pkg/apis/apps/v1alpha1"
	kumo "kumo.dev/kumo/pkg/apis/kumo/v1alpha1"
)

// The usage half of the controller: a tenant's status.usage counts what its namespace holds,
// like admission counts it against spec.quota (internal/quota), recomputed whenever a VM or disk
// of the namespace changes.

// watchUsage adds the informers the usage is counted from.
func (ctl *Controller) watchUsage() {
	byNS := cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc}
	ctl.vms = cache.NewSharedIndexInformer(
		cache.NewListWatchFromClient(ctl.c.Apps, "vminstances", "", fields.Everything()), &apps.VMInstance{}, resyncPeriod, byNS)
	ctl.disks = cache.NewSharedIndexInformer(
		cache.NewListWatchFromClient(ctl.c.Apps, "vmdisks", "", fields.Everything()), &apps.VMDisk{}, resyncPeriod, byNS)
	ctl.types = cache.NewSharedIndexInformer(
		cache.NewListWatchFromClient(ctl.c.Kumo, "instancetypes", "", fields.Everything()), &kumo.InstanceType{}, resyncPeriod, cache.Indexers{})
	enqueueTenantOf := func(obj interface{}) {
		if tomb, ok := obj.(cache.DeletedFinalStateUnknown); ok {
			obj = tomb.Obj
		}
		if m, err := meta.Accessor(obj); err == nil {
			if t := kumo.TenantOfNamespace(m.GetNamespace()); t != "" {
				ctl.queue.Add(t)
			}
		}
	}
	for _, inf := range []cache.SharedIndexInformer{ctl.vms, ctl.disks} {
		_, _ = inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
			AddFunc: enqueueTenantOf, UpdateFunc: func(_, o interface{}) { enqueueTenantOf(o) }, DeleteFunc: enqueueTenantOf,
		})
	}
}

// usage counts what tenant t's namespace holds, from the informers' caches.
func (ctl *Controller) usage(t *kumo.Tenant) (kumo.TenantResources, error) {
	ns := kumo.TenantNamespace(t.Name)
	vmObjs, err := ctl.vms.GetIndexer().ByIndex(cache.NamespaceIndex, ns)
	if err != nil {
		return kumo.TenantResources{}, fmt.Errorf("VMs of namespace %s: %w", ns, err)
	}
	diskObjs, err := ctl.disks.GetIndexer().ByIndex(cache.NamespaceIndex, ns)
	if err != nil {
		return kumo.TenantResources{}, fmt.Errorf("disks of namespace %s: %w", ns, err)
	}
	vms := make([]apps.VMInstance, 0, len(vmObjs))
	for _, o := range vmObjs {
		vms = append(vms, *o.(*apps.VMInstance))
	}
	disks := make([]apps.VMDisk, 0, len(diskObjs))
	for _, o := range diskObjs {
		disks = append(disks, *o.(*apps.VMDisk))
	}
	size := func(name string) (int64, int64, bool, error) {
		obj, ok, err := ctl.types.GetStore().GetByKey(name)
		if err != nil || !ok {
			return 0, 0, false, err
		}
		it := obj.(*kumo.InstanceType)
		return int64(it.Spec.CPUs), it.Spec.Memory.Value(), true, nil
	}
	used, err := quota.Usage(vms, disks, size, "", "")
	if err != nil {
		return kumo.TenantResources{}, err
	}
	return used.Resources(), nil
}
