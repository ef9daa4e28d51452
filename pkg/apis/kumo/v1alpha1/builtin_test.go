package v1alpha1

import (
	"fmt"
	"testing"

	"k8s.io/apimachinery/pkg/api/resource"
)

// productTypes is the product's instance-type tables, copied literally: vCPUs and memory in GiB.
var productTypes = []struct {
	name   string
	cpus   int32
	memGiB int64
}{
	{"s1.small", 1, 2},
	{"s1.medium", 2, 4},
	{"s1.large", 4, 8},
	{"s1.xlarge", 8, 16},
	{"s1.3large", 12, 24},
	{"s1.2xlarge", 16, 32},
	{"s1.3xlarge", 24, 48},
	{"s1.4xlarge", 32, 64},
	{"s1.8xlarge", 64, 128},
	{"u1.medium", 1, 4},
	{"u1.large", 2, 8},
	{"u1.xlarge", 4, 16},
	{"u1.2xlarge", 8, 32},
	{"u1.4xlarge", 16, 64},
	{"u1.8xlarge", 32, 128},
	{"m1.large", 2, 16},
	{"m1.xlarge", 4, 32},
	{"m1.2xlarge", 8, 64},
	{"m1.4xlarge", 16, 128},
	{"m1.8xlarge", 32, 256},
}

func TestBuiltinInstanceTypesMatchTheProductTables(t *testing.T) {
	got := BuiltinInstanceTypes()
	if len(got) != 20 || len(productTypes) != 20 {
		t.Fatalf("BuiltinInstanceTypes returned %d types, want 20", len(got))
	}
	byName := map[string]InstanceType{}
	for _, it := range got {
		if _, dup := byName[it.Name]; dup {
			t.Errorf("type %s is returned twice", it.Name)
		}
		byName[it.Name] = it
	}
	for _, want := range productTypes {
		t.Run(want.name, func(t *testing.T) {
			it, ok := byName[want.name]
			if !ok {
				t.Fatalf("type %s is missing", want.name)
			}
			if it.Spec.CPUs != want.cpus {
				t.Errorf("cpus = %d, want %d", it.Spec.CPUs, want.cpus)
			}
			wantMem := resource.MustParse(fmt.Sprintf("%dGi", want.memGiB))
			if it.Spec.Memory.Cmp(wantMem) != 0 || it.Spec.Memory.Value() != want.memGiB<<30 {
				t.Errorf("memory = %s, want %dGi", it.Spec.Memory.String(), want.memGiB)
			}
			if it.Spec.Memory.String() != wantMem.String() {
				t.Errorf("memory is written %q, want %q", it.Spec.Memory.String(), wantMem.String())
			}
			if it.Spec.Series != want.name[:2] {
				t.Errorf("series = %q, want %q", it.Spec.Series, want.name[:2])
			}
			if it.Spec.Description == "" {
				t.Error("description is empty")
			}
			if it.Labels[LabelBuiltin] != "true" {
				t.Errorf("labels = %v, want %s=true", it.Labels, LabelBuiltin)
			}
			if it.Kind != "InstanceType" || it.APIVersion != "kumo.dev/v1alpha1" {
				t.Errorf("type meta = %s %s, want kumo.dev/v1alpha1 InstanceType", it.APIVersion, it.Kind)
			}
		})
	}
}

func TestBuiltinInstanceTypeSeriesRatios(t *testing.T) {
	ratio := map[string]int64{"s1": 2, "u1": 4, "m1": 8}
	count := map[string]int{}
	for _, it := range BuiltinInstanceTypes() {
		want, ok := ratio[it.Spec.Series]
		if !ok {
			t.Errorf("%s is in unknown series %q", it.Name, it.Spec.Series)
			continue
		}
		count[it.Spec.Series]++
		gib := it.Spec.Memory.Value() >> 30
		if gib<<30 != it.Spec.Memory.Value() || gib != int64(it.Spec.CPUs)*want {
			t.Errorf("%s has %d vCPU / %s, want 1:%d", it.Name, it.Spec.CPUs, it.Spec.Memory.String(), want)
		}
	}
	if count["s1"] != 9 || count["u1"] != 6 || count["m1"] != 5 {
		t.Errorf("series sizes = %v, want s1:9 u1:6 m1:5", count)
	}
}

func TestBuiltinInstanceTypesAreIndependentCopies(t *testing.T) {
	a := BuiltinInstanceTypes()
	a[0].Labels["x"] = "y"
	a[0].Spec.CPUs = 99
	b := BuiltinInstanceTypes()
	if _, ok := b[0].Labels["x"]; ok || b[0].Spec.CPUs == 99 {
		t.Error("changing a returned type changed the next call's result")
	}
}

func TestInstanceTypeSpecString(t *testing.T) {
	for _, it := range BuiltinInstanceTypes() {
		if it.Name == "s1.3large" {
			if got := it.Spec.String(); got != "12 vCPU / 24Gi" {
				t.Errorf("String() = %q, want %q", got, "12 vCPU / 24Gi")
			}
			return
		}
	}
	t.Fatal("s1.3large not found")
}

func TestBuiltinInstanceProfiles(t *testing.T) {
	got := BuiltinInstanceProfiles()
	byName := map[string]InstanceProfile{}
	for _, p := range got {
		byName[p.Name] = p
	}
	if len(got) != 5 || len(byName) != 5 {
		t.Fatalf("got %d profiles (%d names), want 5", len(got), len(byName))
	}
	cases := []struct {
		name     string
		os       OSType
		firmware Firmware
		bus, nic string
	}{
		{"ubuntu", OSLinux, FirmwareBIOS, "virtio", "virtio"},
		{"centos", OSLinux, FirmwareBIOS, "virtio", "virtio"},
		{"debian", OSLinux, FirmwareBIOS, "virtio", "virtio"},
		{"fedora", OSLinux, FirmwareBIOS, "virtio", "virtio"},
		{"windows", OSWindows, FirmwareUEFI, "sata", "e1000e"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p, ok := byName[tc.name]
			if !ok {
				t.Fatalf("profile %s is missing", tc.name)
			}
			s := p.Spec
			if s.OSType != tc.os || s.Firmware != tc.firmware || s.DiskBus != tc.bus || s.NICModel != tc.nic {
				t.Errorf("spec = %+v, want os %s firmware %s disk %s nic %s", s, tc.os, tc.firmware, tc.bus, tc.nic)
			}
			if s.Machine != "q35" {
				t.Errorf("machine = %q, want q35", s.Machine)
			}
			windows := tc.os == OSWindows
			if s.HyperV != windows || s.Tablet != windows {
				t.Errorf("hyperv=%v tablet=%v, want both %v", s.HyperV, s.Tablet, windows)
			}
			if wantClock := map[bool]string{true: "localtime", false: "utc"}[windows]; s.Clock != wantClock {
				t.Errorf("clock = %q, want %q", s.Clock, wantClock)
			}
			if p.Labels[LabelBuiltin] != "true" || p.Kind != "InstanceProfile" || p.APIVersion != "kumo.dev/v1alpha1" {
				t.Errorf("meta = %s %s %v", p.APIVersion, p.Kind, p.Labels)
			}
		})
	}
}

func TestTenantNamespace(t *testing.T) {
	for _, tenant := range []string{"acme", "a", "tenant-x", "acme-corp-2"} {
		ns := TenantNamespace(tenant)
		if ns != "tenant-"+tenant {
			t.Errorf("TenantNamespace(%q) = %q, want %q", tenant, ns, "tenant-"+tenant)
		}
		if back := TenantOfNamespace(ns); back != tenant {
			t.Errorf("TenantOfNamespace(TenantNamespace(%q)) = %q", tenant, back)
		}
	}
	for _, ns := range []string{"", "tenant-", "tenant", "default", "kube-system", "kumo-system", "xtenant-acme", "Tenant-acme"} {
		if got := TenantOfNamespace(ns); got != "" {
			t.Errorf("TenantOfNamespace(%q) = %q, want no tenant", ns, got)
		}
	}
}
