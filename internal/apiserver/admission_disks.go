package apiserver

import (
	"context"
	"fmt"
	"sort"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metainternalversion "k8s.io/apimachinery/pkg/apis/meta/internalversion"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation/field"
	genericapirequest "k8s.io/apiserver/pkg/endpoints/request"

	apps "kumo.dev/kumo/pkg/apis/apps/v1alpha1"
)

// The rules that keep a disk's data whole: a disk other than an optical one is attached to one VM
// at a time (two QEMUs writing one image corrupt it), a disk a VM names is not deleted under it,
// and a clone names a disk that exists.

// vmsOf lists the VMs of a namespace, read from etcd (not the watch cache) so that a VM created
// just before is seen.
func (l *lookups) vmsOf(ctx context.Context, ns string) ([]apps.VMInstance, error) {
	list, err := l.vmInstances.List(genericapirequest.WithNamespace(ctx, ns), &metainternalversion.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("list the VMs of namespace %s: %w", ns, err)
	}
	return list.(*apps.VMInstanceList).Items, nil
}

// exclusiveDisks refuses a VM that attaches a disk another VM of its namespace already names,
// unless the disk is optical (an installer ISO is read-only and may be shared). A disk that does
// not exist yet counts as exclusive: disks are not optical unless they say so. Only disks the
// update adds are checked, so a VM that already holds a disk keeps being editable.
func (l *lookups) exclusiveDisks(ctx context.Context, vm, old *apps.VMInstance) field.ErrorList {
	had := map[string]bool{}
	if old != nil {
		for _, d := range old.Spec.Disks {
			had[d.Name] = true
		}
	}
	var added []int
	for i, d := range vm.Spec.Disks {
		if d.Name != "" && !had[d.Name] {
			added = append(added, i)
		}
	}
	if len(added) == 0 {
		return nil
	}
	vms, err := l.vmsOf(ctx, vm.Namespace)
	if err != nil {
		return field.ErrorList{field.InternalError(field.NewPath("spec", "disks"), err)}
	}
	var errs field.ErrorList
	nsCtx := genericapirequest.WithNamespace(ctx, vm.Namespace)
	for _, i := range added {
		name, path := vm.Spec.Disks[i].Name, field.NewPath("spec", "disks").Index(i).Child("name")
		users := usersOf(vms, name, vm.Name)
		if len(users) == 0 {
			continue
		}
		obj, err := l.vmDisks.Get(nsCtx, name, &metav1.GetOptions{})
		switch {
		case err == nil && obj.(*apps.VMDisk).Spec.Optical:
			continue
		case err != nil && !apierrors.IsNotFound(err):
			errs = append(errs, field.InternalError(path, fmt.Errorf("read VMDisk %s: %w", name, err)))
			continue
		}
		errs = append(errs, field.Forbidden(path, fmt.Sprintf(
			"VMDisk %s is already in use by %s: a disk that is not optical belongs to one VM at a time "+
				"(clone it with source.disk, or detach it from %s first)", name, vmNames(users), strings.Join(users, ", "))))
	}
	return errs
}

// detachedWhileBound refuses to take a disk that is not optical out of a VM bound to a node: its
// QEMU keeps the disk open until the incarnation ends, while the rules above (and the delete
// guard, and the scheduler) would already give the disk to another VM, or let it be deleted.
func (l *lookups) detachedWhileBound(ctx context.Context, vm, old *apps.VMInstance) field.ErrorList {
	if old == nil || old.Status.Node == "" {
		return nil
	}
	kept := map[string]bool{}
	for _, d := range vm.Spec.Disks {
		kept[d.Name] = true
	}
	var errs field.ErrorList
	nsCtx := genericapirequest.WithNamespace(ctx, vm.Namespace)
	for i, d := range old.Spec.Disks {
		if d.Name == "" || kept[d.Name] {
			continue
		}
		obj, err := l.vmDisks.Get(nsCtx, d.Name, &metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
			continue // no disk, no data to protect
		case err == nil && obj.(*apps.VMDisk).Spec.Optical:
			continue
		case err != nil:
			errs = append(errs, field.InternalError(field.NewPath("spec", "disks"), fmt.Errorf("read VMDisk %s: %w", d.Name, err)))
			continue
		}
		errs = append(errs, field.Forbidden(field.NewPath("spec", "disks"), fmt.Sprintf(
			"VMDisk %s (spec.disks[%d] before this update) is attached to incarnation %d running on node %s: stop the VM before detaching it",
			d.Name, i, old.Status.Incarnation, old.Status.Node)))
	}
	return errs
}

// usersOf names the VMs (other than self) that attach disk, sorted.
func usersOf(vms []apps.VMInstance, disk, self string) []string {
	var out []string
	for _, vm := range vms {
		if vm.Name == self {
			continue
		}
		for _, d := range vm.Spec.Disks {
			if d.Name == disk {
				out = append(out, vm.Name)
				break
			}
		}
	}
	sort.Strings(out)
	return out
}

func vmNames(names []string) string {
	if len(names) == 1 {
		return "VM " + names[0]
	}
	return "VMs " + strings.Join(names, ", ")
}

// cloneSource checks that a disk cloned from another (source.disk.name) names a disk of the same
// namespace that exists and is not being deleted. A source that is not Ready yet is accepted:
// like a KubeVirt DataVolume clone, the new disk waits (Pending) until its source is ready.
func (l *lookups) cloneSource(ctx context.Context, d *apps.VMDisk) field.ErrorList {
	src := d.Spec.Source.Disk
	if src == nil || src.Name == "" {
		return nil
	}
	path := field.NewPath("spec", "source", "disk", "name")
	obj, err := l.vmDisks.Get(genericapirequest.WithNamespace(ctx, d.Namespace), src.Name, &metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		e := field.NotFound(path, src.Name)
		e.Detail = fmt.Sprintf("no VMDisk %s in namespace %s to clone (kumo get vmdisks lists them)", src.Name, d.Namespace)
		return field.ErrorList{e}
	case err != nil:
		return field.ErrorList{field.InternalError(path, fmt.Errorf("read VMDisk %s: %w", src.Name, err))}
	case obj.(*apps.VMDisk).DeletionTimestamp != nil:
		return field.ErrorList{field.Forbidden(path, fmt.Sprintf("VMDisk %s is being deleted", src.Name))}
	case obj.(*apps.VMDisk).Spec.StorageClass != d.Spec.StorageClass:
		// Each driver copies its own class's data only: a copy across classes would be placed
		// and then fail on the node.
		return field.ErrorList{field.Forbidden(field.NewPath("spec", "storageClass"), fmt.Sprintf(
			"a copy of VMDisk %s must have its storage class %q (copies between storage classes are not supported)",
			src.Name, obj.(*apps.VMDisk).Spec.StorageClass))}
	}
	return nil
}

// diskUnused refuses to delete a disk while any VM names it, running or stopped (a stopped VM's
// disk is its data), or while a clone of it is still being made.
func (a *admissionChecks) diskUnused(ctx context.Context, ns, disk string) error {
	vms, err := a.l.vmsOf(ctx, ns)
	if err != nil {
		return err
	}
	if users := usersOf(vms, disk, ""); len(users) > 0 {
		return apierrors.NewConflict(apps.Resource("vmdisks"), disk, fmt.Errorf(
			"disk is in use by %s; delete the VM or remove the disk from its spec.disks first", vmNames(users)))
	}
	list, err := a.l.vmDisks.List(genericapirequest.WithNamespace(ctx, ns), &metainternalversion.ListOptions{})
	if err != nil {
		return fmt.Errorf("list the disks of namespace %s: %w", ns, err)
	}
	var clones []string
	for _, d := range list.(*apps.VMDiskList).Items {
		if s := d.Spec.Source.Disk; s != nil && s.Name == disk && d.Status.Phase != apps.DiskReady && d.Status.Phase != apps.DiskFailed && d.DeletionTimestamp == nil {
			clones = append(clones, d.Name)
		}
	}
	if len(clones) > 0 {
		sort.Strings(clones)
		return apierrors.NewConflict(apps.Resource("vmdisks"), disk, fmt.Errorf(
			"disk is the source of VMDisk %s, which is not cloned yet; wait until it is Ready or delete it first", strings.Join(clones, ", ")))
	}
	return nil
}
