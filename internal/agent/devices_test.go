package agent

import (
	"testing"

	"kumo.dev/kumo/internal/hypervisor/qemu"
	apps "kumo.dev/kumo/pkg/apis/apps/v1alpha1"
	kumo "kumo.dev/kumo/pkg/apis/kumo/v1alpha1"
)

func profileNamed(t *testing.T, name string) kumo.InstanceProfileSpec {
	for _, p := range kumo.BuiltinInstanceProfiles() {
		if p.Name == name {
			return p.Spec
		}
	}
	t.Fatalf("no built-in profile %s", name)
	return kumo.InstanceProfileSpec{}
}

// Cloud kernels have virtio but no AHCI: a Linux guest's seed must not sit on q35's AHCI.
func TestSeedIsAVirtioDiskForLinuxAndASATACDROMForWindows(t *testing.T) {
	for _, name := range []string{"ubuntu", "debian", "centos", "fedora"} {
		seed := seedDisk("/run/x", profileNamed(t, name))
		if seed.Bus != qemu.BusVirtio || seed.CDROM || !seed.ReadOnly {
			t.Errorf("%s: seed %+v, want a read-only virtio disk", name, seed)
		}
	}
	if seed := seedDisk("/run/x", profileNamed(t, "windows")); seed.Bus != qemu.BusSATA || !seed.CDROM {
		t.Errorf("windows: seed %+v, want a SATA CD-ROM (cloudbase-init)", seed)
	}
}

func TestDiskBusComesFromTheVMThenTheProfile(t *testing.T) {
	linux, windows := profileNamed(t, "ubuntu"), profileNamed(t, "windows")
	for _, tc := range []struct {
		bus     apps.DiskBus
		profile kumo.InstanceProfileSpec
		disk    string
		optical string
	}{
		{"", linux, qemu.BusVirtio, qemu.BusSCSI},
		{apps.BusSATA, linux, qemu.BusSATA, qemu.BusSATA},
		{apps.BusSCSI, linux, qemu.BusSCSI, qemu.BusSCSI},
		{apps.BusVirtio, linux, qemu.BusVirtio, qemu.BusSCSI},
		{"", windows, qemu.BusSATA, qemu.BusSATA},
		{apps.BusVirtio, windows, qemu.BusVirtio, qemu.BusSCSI},
	} {
		if got := diskBus(tc.bus, tc.profile); got != tc.disk {
			t.Errorf("bus %q, profile disk bus %s: disk on %s, want %s", tc.bus, tc.profile.DiskBus, got, tc.disk)
		}
		if got := opticalBus(tc.bus, tc.profile); got != tc.optical {
			t.Errorf("bus %q, profile disk bus %s: CD-ROM on %s, want %s", tc.bus, tc.profile.DiskBus, got, tc.optical)
		}
	}
}
