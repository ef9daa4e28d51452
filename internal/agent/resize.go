package agent

import (
	"context"
	"fmt"
	"log/slog"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	apps "kumo.dev/kumo/pkg/apis/apps/v1alpha1"
)

// growDisks resizes the disks of a running VM whose spec.storage grew, online (the guest sees the
// new size at once). A disk is found in the running incarnation by its name, recorded in the
// configuration QEMU was started with: spec.disks may have been reordered, or disks added, since.
func (a *Agent) growDisks(ctx context.Context, vm *apps.VMInstance, rt *runtimeVM) {
	for _, ref := range vm.Spec.Disks {
		disk, attached := rt.cfg.DiskByName(ref.Name)
		if !attached {
			// Added to spec.disks after this incarnation started (it is attached at the next
			// start), or the incarnation was started before disks were recorded by name.
			continue
		}
		d := &apps.VMDisk{}
		if err := a.c.Apps.Get().Namespace(vm.Namespace).Resource("vmdisks").Name(ref.Name).Do(ctx).Into(d); err != nil {
			continue
		}
		if d.Spec.Optical || d.Status.Size == nil || d.Spec.Storage == nil || d.Spec.Storage.Cmp(*d.Status.Size) <= 0 {
			continue
		}
		want := d.Spec.Storage.Value()
		if err := rt.vm.GrowDisk(ctx, disk.ID, want); err != nil {
			err = fmt.Errorf("disk %s of VM %s: %w", d.Name, vm.Name, err)
			slog.Warn("online resize", "disk", d.Namespace+"/"+d.Name, "err", err)
			a.event(d, corev1.EventTypeWarning, "ResizeFailed", err.Error())
			a.reportDisk(ctx, d, func(cur *apps.VMDisk) {
				meta.SetStatusCondition(&cur.Status.Conditions, metav1.Condition{Type: "Resized", Status: metav1.ConditionFalse, Reason: "ResizeFailed", Message: err.Error(), ObservedGeneration: cur.Generation})
			})
			continue
		}
		slog.Info("disk grown online", "disk", d.Namespace+"/"+d.Name, "qemu_disk", disk.ID, "size", d.Spec.Storage.String())
		a.event(d, corev1.EventTypeNormal, "Resized", fmt.Sprintf("grown online to %s while VM %s runs", d.Spec.Storage.String(), vm.Name))
		a.reportDisk(ctx, d, func(cur *apps.VMDisk) {
			cur.Status.Size = resource.NewQuantity(want, resource.BinarySI)
			meta.SetStatusCondition(&cur.Status.Conditions, metav1.Condition{Type: "Resized", Status: metav1.ConditionTrue, Reason: "GrownOnline",
				Message: fmt.Sprintf("grown to %s while VM %s runs", d.Spec.Storage.String(), vm.Name), ObservedGeneration: cur.Generation})
		})
	}
}
