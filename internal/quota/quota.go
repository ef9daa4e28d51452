// Package quota counts what a tenant holds against its Tenant's spec.quota: VMs, their vCPU and
// memory (from their instance types), disks and their bytes per storage class, snapshots and
// public IPs. The API server's admission refuses a write that would exceed a limit (403 naming
// the quota and the usage); the tenant controller reports the usage in the Tenant's status.
package quota

import (
	"fmt"
	"strings"

	"k8s.io/apimachinery/pkg/api/resource"

	apps "kumo.dev/kumo/pkg/apis/apps/v1alpha1"
	kumo "kumo.dev/kumo/pkg/apis/kumo/v1alpha1"
)

// Dimension is one counted resource, named as in spec.quota.
type Dimension int

const (
	VMs Dimension = iota
	CPUs
	Memory
	Disks
	LocalStorage
	ReplicatedStorage
	Snapshots
	PublicIPs
	numDimensions
)

var names = [numDimensions]string{"vms", "cpus", "memory", "disks", "storage.local", "storage.replicated", "snapshots", "publicIPs"}

func (d Dimension) String() string { return names[d] }

// bytes says whether a dimension counts bytes (shown as a quantity, e.g. 16Gi).
func (d Dimension) bytes() bool { return d == Memory || d == LocalStorage || d == ReplicatedStorage }

// Amounts are a tenant's resources as numbers (bytes for memory and storage).
type Amounts [numDimensions]int64

// Add returns a+b.
func (a Amounts) Add(b Amounts) Amounts {
	for i := range a {
		a[i] += b[i]
	}
	return a
}

// Sub returns a-b.
func (a Amounts) Sub(b Amounts) Amounts {
	for i := range a {
		a[i] -= b[i]
	}
	return a
}

// Format renders the given dimensions of a as "cpus=4,memory=16Gi".
func (a Amounts) Format(dims []Dimension) string {
	parts := make([]string, len(dims))
	for i, d := range dims {
		parts[i] = d.String() + "=" + a.value(d)
	}
	return strings.Join(parts, ",")
}

func (a Amounts) value(d Dimension) string {
	if d.bytes() {
		return resource.NewQuantity(a[d], resource.BinarySI).String()
	}
	return fmt.Sprint(a[d])
}

// Limits are the limits of a quota, its unset fields taking their defaults.
func Limits(q kumo.TenantResources) Amounts {
	q = *q.DeepCopy()
	kumo.SetDefaultsTenantQuota(&q)
	return FromResources(q)
}

// FromResources converts a TenantResources; unset fields count 0.
func FromResources(r kumo.TenantResources) Amounts {
	var a Amounts
	count := func(d Dimension, p *int64) {
		if p != nil {
			a[d] = *p
		}
	}
	size := func(d Dimension, p *resource.Quantity) {
		if p != nil {
			a[d] = p.Value()
		}
	}
	count(VMs, r.VMs)
	count(CPUs, r.CPUs)
	size(Memory, r.Memory)
	count(Disks, r.Disks)
	if r.Storage != nil {
		size(LocalStorage, r.Storage.Local)
		size(ReplicatedStorage, r.Storage.Replicated)
	}
	count(Snapshots, r.Snapshots)
	count(PublicIPs, r.PublicIPs)
	return a
}

// Resources converts amounts back, every field set.
func (a Amounts) Resources() kumo.TenantResources {
	n := func(d Dimension) *int64 { v := a[d]; return &v }
	q := func(d Dimension) *resource.Quantity { return resource.NewQuantity(a[d], resource.BinarySI) }
	return kumo.TenantResources{
		VMs: n(VMs), CPUs: n(CPUs), Memory: q(Memory), Disks: n(Disks),
		Storage:   &kumo.StorageResources{Local: q(LocalStorage), Replicated: q(ReplicatedStorage)},
		Snapshots: n(Snapshots), PublicIPs: n(PublicIPs),
	}
}

// Sizer gives an instance type's vCPU and memory; found is false when no such type exists.
type Sizer func(instanceType string) (cpus int64, memory int64, found bool, err error)

// OfVM is what one VM counts: itself, its vCPU and memory (spec.resources, else its instance type's), and a public IP when
// it is external. A VM whose instance type does not exist (any more) cannot run: it counts no
// vCPU or memory.
func OfVM(vm *apps.VMInstance, size Sizer) (Amounts, error) {
	var a Amounts
	a[VMs] = 1
	if vm.Spec.External {
		a[PublicIPs] = 1
	}
	if explicit, ok := vm.Spec.ExplicitSize(); ok {
		// spec.resources sizes the VM and overrides its instance type (as the scheduler does).
		a[CPUs], a[Memory] = explicit.CPUs, explicit.Memory
		return a, nil
	}
	cpus, mem, found, err := size(vm.Spec.InstanceType)
	if err != nil {
		return a, fmt.Errorf("size of instance type %s of VM %s: %w", vm.Spec.InstanceType, vm.Name, err)
	}
	if found {
		a[CPUs], a[Memory] = cpus, mem
	}
	return a, nil
}

// OfDisk is what one disk counts: itself and its spec.storage in its class.
func OfDisk(d *apps.VMDisk) Amounts {
	var a Amounts
	a[Disks] = 1
	var bytes int64
	if d.Spec.Storage != nil {
		bytes = d.Spec.Storage.Value()
	}
	switch d.Spec.StorageClass {
	case apps.StorageLocal:
		a[LocalStorage] = bytes
	default: // replicated is the default class
		a[ReplicatedStorage] = bytes
	}
	return a
}

// Usage is what a namespace's VMs and disks count, skipping the VM and the disk named skipVM
// and skipDisk (the object a write replaces).
func Usage(vms []apps.VMInstance, disks []apps.VMDisk, size Sizer, skipVM, skipDisk string) (Amounts, error) {
	var used Amounts
	for i := range vms {
		if vms[i].Name == skipVM {
			continue
		}
		a, err := OfVM(&vms[i], size)
		if err != nil {
			return used, err
		}
		used = used.Add(a)
	}
	for i := range disks {
		if disks[i].Name != skipDisk {
			used = used.Add(OfDisk(&disks[i]))
		}
	}
	return used, nil
}

// Exceeded lists the dimensions a write takes past their limit: those it increases (requested
// more than released) and whose usage after it would be above the limit. A tenant over a limit
// an administrator lowered may still shrink, delete and edit what does not grow.
func Exceeded(limits, usedOthers, requested, released Amounts) []Dimension {
	var out []Dimension
	for d := Dimension(0); d < numDimensions; d++ {
		if requested[d] > released[d] && usedOthers[d]+requested[d] > limits[d] {
			out = append(out, d)
		}
	}
	return out
}
