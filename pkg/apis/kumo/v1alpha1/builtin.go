package v1alpha1

import (
	"fmt"

	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// LabelBuiltin marks the objects Kumo creates at start-up; an admin may still edit them.
const LabelBuiltin = "kumo.dev/builtin"

// builtinTypes are the product's S, U and M series, exactly as its tables state them
// (memory in GiB).
var builtinTypes = []struct {
	name   string
	cpus   int32
	memGiB int64
	use    string
}{
	{"s1.small", 1, 2, "Light services, proxies"},
	{"s1.medium", 2, 4, "Workers, batch processing"},
	{"s1.large", 4, 8, "Scientific computing"},
	{"s1.xlarge", 8, 16, "Rendering, compilation"},
	{"s1.3large", 12, 24, "Intensive applications"},
	{"s1.2xlarge", 16, 32, "HPC, simulations"},
	{"s1.3xlarge", 24, 48, "Distributed computing"},
	{"s1.4xlarge", 32, 64, "Massive computing"},
	{"s1.8xlarge", 64, 128, "Exascale computing"},
	{"u1.medium", 1, 4, "Dev, tests, micro-services"},
	{"u1.large", 2, 8, "Web applications, APIs"},
	{"u1.xlarge", 4, 16, "Business applications"},
	{"u1.2xlarge", 8, 32, "Intensive workloads"},
	{"u1.4xlarge", 16, 64, "Critical applications"},
	{"u1.8xlarge", 32, 128, "Enterprise applications"},
	{"m1.large", 2, 16, "Redis caches, Memcached"},
	{"m1.xlarge", 4, 32, "In-memory databases"},
	{"m1.2xlarge", 8, 64, "Analytics, Big Data"},
	{"m1.4xlarge", 16, 128, "SAP HANA, Oracle"},
	{"m1.8xlarge", 32, 256, "Data warehouses"},
}

// BuiltinInstanceTypes returns the 20 instance types Kumo creates at start-up.
func BuiltinInstanceTypes() []InstanceType {
	out := make([]InstanceType, 0, len(builtinTypes))
	for _, t := range builtinTypes {
		out = append(out, InstanceType{
			TypeMeta:   metav1.TypeMeta{APIVersion: SchemeGroupVersion.String(), Kind: "InstanceType"},
			ObjectMeta: metav1.ObjectMeta{Name: t.name, Labels: map[string]string{LabelBuiltin: "true"}},
			Spec: InstanceTypeSpec{
				CPUs:        t.cpus,
				Memory:      *resource.NewQuantity(t.memGiB<<30, resource.BinarySI),
				Series:      t.name[:2],
				Description: t.use,
			},
		})
	}
	return out
}

// BuiltinInstanceProfiles returns the OS profiles Kumo creates at start-up. Linux guests get
// paravirtual virtio devices; Windows gets SATA and e1000e, which it drives without extra
// drivers, on UEFI with a local-time clock.
func BuiltinInstanceProfiles() []InstanceProfile {
	linux := InstanceProfileSpec{OSType: OSLinux, Machine: "q35", Firmware: FirmwareBIOS, DiskBus: "virtio", NICModel: "virtio", Clock: "utc"}
	windows := InstanceProfileSpec{OSType: OSWindows, Machine: "q35", Firmware: FirmwareUEFI, DiskBus: "sata", NICModel: "e1000e", Clock: "localtime", Tablet: true, HyperV: true}
	var out []InstanceProfile
	for _, p := range []struct {
		name string
		spec InstanceProfileSpec
	}{{"ubuntu", linux}, {"centos", linux}, {"debian", linux}, {"fedora", linux}, {"windows", windows}} {
		out = append(out, InstanceProfile{
			TypeMeta:   metav1.TypeMeta{APIVersion: SchemeGroupVersion.String(), Kind: "InstanceProfile"},
			ObjectMeta: metav1.ObjectMeta{Name: p.name, Labels: map[string]string{LabelBuiltin: "true"}},
			Spec:       p.spec,
		})
	}
	return out
}

// TenantNamespace returns the namespace a tenant owns.
func TenantNamespace(tenant string) string { return TenantNamespacePrefix + tenant }

// TenantOfNamespace returns the tenant that owns a namespace, or "" when none does.
func TenantOfNamespace(ns string) string {
	if len(ns) > len(TenantNamespacePrefix) && ns[:len(TenantNamespacePrefix)] == TenantNamespacePrefix {
		return ns[len(TenantNamespacePrefix):]
	}
	return ""
}

// String renders a type as "12 vCPU / 24Gi".
func (s InstanceTypeSpec) String() string {
	return fmt.Sprintf("%d vCPU / %s", s.CPUs, s.Memory.String())
}
