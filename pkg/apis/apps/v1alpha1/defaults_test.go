package v1alpha1

import (
	"reflect"
	"testing"

	"k8s.io/apimachinery/pkg/api/resource"
)

func TestSetDefaultsVMInstance(t *testing.T) {
	yes, no := true, false
	cases := []struct {
		name       string
		spec       VMInstanceSpec
		wantMethod ExternalMethod
		wantPorts  []int32
		wantRun    RunStrategy
	}{
		{
			name:       "empty spec gets PortList, port 22 and Always",
			wantMethod: PortList, wantPorts: []int32{22}, wantRun: RunAlways,
		},
		{
			name:       "running=true means Always",
			spec:       VMInstanceSpec{Running: &yes},
			wantMethod: PortList, wantPorts: []int32{22}, wantRun: RunAlways,
		},
		{
			name:       "running=false means Halted",
			spec:       VMInstanceSpec{Running: &no},
			wantMethod: PortList, wantPorts: []int32{22}, wantRun: RunHalted,
		},
		{
			name:       "explicit runStrategy is kept even when running disagrees",
			spec:       VMInstanceSpec{RunStrategy: RunManual, Running: &no},
			wantMethod: PortList, wantPorts: []int32{22}, wantRun: RunManual,
		},
		{
			name:       "explicit Once is kept",
			spec:       VMInstanceSpec{RunStrategy: RunOnce},
			wantMethod: PortList, wantPorts: []int32{22}, wantRun: RunOnce,
		},
		{
			name:       "explicit WholeIP and ports are kept",
			spec:       VMInstanceSpec{ExternalMethod: WholeIP, ExternalPorts: []int32{80, 443}},
			wantMethod: WholeIP, wantPorts: []int32{80, 443}, wantRun: RunAlways,
		},
		{
			name:       "an explicit empty port list is not replaced by the default",
			spec:       VMInstanceSpec{ExternalPorts: []int32{}},
			wantMethod: PortList, wantPorts: []int32{}, wantRun: RunAlways,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			vm := &VMInstance{Spec: tc.spec}
			SetDefaultsVMInstance(vm)
			if vm.Spec.ExternalMethod != tc.wantMethod {
				t.Errorf("externalMethod = %q, want %q", vm.Spec.ExternalMethod, tc.wantMethod)
			}
			if !reflect.DeepEqual(vm.Spec.ExternalPorts, tc.wantPorts) {
				t.Errorf("externalPorts = %#v, want %#v", vm.Spec.ExternalPorts, tc.wantPorts)
			}
			if vm.Spec.RunStrategy != tc.wantRun {
				t.Errorf("runStrategy = %q, want %q", vm.Spec.RunStrategy, tc.wantRun)
			}
			if !reflect.DeepEqual(vm.Spec.Running, tc.spec.Running) {
				t.Errorf("running changed from %v to %v; defaulting must leave it", tc.spec.Running, vm.Spec.Running)
			}
		})
	}
}

func TestSetDefaultsVMInstanceIsIdempotent(t *testing.T) {
	no := false
	vm := &VMInstance{Spec: VMInstanceSpec{Running: &no, InstanceType: "u1.medium"}}
	SetDefaultsVMInstance(vm)
	once := vm.DeepCopy()
	SetDefaultsVMInstance(vm)
	if !reflect.DeepEqual(vm, once) {
		t.Errorf("second defaulting changed the VM:\n%+v\n%+v", once.Spec, vm.Spec)
	}
}

func TestSetDefaultsVMInstanceDoesNotShareThePortSlice(t *testing.T) {
	a, b := &VMInstance{}, &VMInstance{}
	SetDefaultsVMInstance(a)
	SetDefaultsVMInstance(b)
	a.Spec.ExternalPorts[0] = 2222
	if b.Spec.ExternalPorts[0] != DefaultExternalPort {
		t.Errorf("changing one VM's default ports changed another's: %v", b.Spec.ExternalPorts)
	}
}

func TestSetDefaultsVMDisk(t *testing.T) {
	q := func(s string) *resource.Quantity { v := resource.MustParse(s); return &v }
	cases := []struct {
		name        string
		spec        VMDiskSpec
		wantStorage string
		wantClass   StorageClass
	}{
		{name: "empty spec gets 5Gi replicated", wantStorage: "5Gi", wantClass: StorageReplicated},
		{name: "explicit size is kept", spec: VMDiskSpec{Storage: q("20Gi")}, wantStorage: "20Gi", wantClass: StorageReplicated},
		{name: "explicit zero size is kept for validation to reject", spec: VMDiskSpec{Storage: q("0")}, wantStorage: "0", wantClass: StorageReplicated},
		{name: "explicit local class is kept", spec: VMDiskSpec{StorageClass: StorageLocal}, wantStorage: "5Gi", wantClass: StorageLocal},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d := &VMDisk{Spec: tc.spec}
			SetDefaultsVMDisk(d)
			if d.Spec.Storage == nil {
				t.Fatal("storage is still nil")
			}
			if want := resource.MustParse(tc.wantStorage); d.Spec.Storage.Cmp(want) != 0 {
				t.Errorf("storage = %s, want %s", d.Spec.Storage, tc.wantStorage)
			}
			if d.Spec.StorageClass != tc.wantClass {
				t.Errorf("storageClass = %q, want %q", d.Spec.StorageClass, tc.wantClass)
			}
		})
	}
	if got := resource.MustParse(DefaultDiskSize); got.Value() != 5<<30 {
		t.Errorf("DefaultDiskSize = %s (%d bytes), want 5Gi", DefaultDiskSize, got.Value())
	}
}

func TestRunStrategyFor(t *testing.T) {
	if RunStrategyFor(true) != RunAlways || RunStrategyFor(false) != RunHalted {
		t.Errorf("RunStrategyFor(true, false) = %q, %q; want Always, Halted", RunStrategyFor(true), RunStrategyFor(false))
	}
}
