package qemu

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

const testUUID = "0d4c6f7e-2b1a-4c3d-9e8f-7a6b5c4d3e2f"

// fakeOVMF points firmware discovery at a temporary directory holding a fake 4M OVMF pair.
func fakeOVMF(t *testing.T) (code string) {
	t.Helper()
	dir := t.TempDir()
	for _, f := range []string{"OVMF_CODE_4M.fd", "OVMF_VARS_4M.fd", "OVMF_CODE.fd", "OVMF_VARS.fd", "OVMF_CODE_4M.ms.fd", "OVMF_VARS_4M.ms.fd"} {
		if err := os.WriteFile(filepath.Join(dir, f), []byte(f), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	old := ovmfDirs
	ovmfDirs = []string{filepath.Join(dir, "missing"), dir}
	t.Cleanup(func() { ovmfDirs = old })
	return filepath.Join(dir, "OVMF_CODE_4M.fd")
}

func mustArgs(t *testing.T, cfg Config) []string {
	t.Helper()
	args, err := cfg.Args()
	if err != nil {
		t.Fatalf("Args: %v", err)
	}
	return args
}

func diffArgs(t *testing.T, got, want []string) {
	t.Helper()
	if slices.Equal(got, want) {
		return
	}
	for i := 0; i < max(len(got), len(want)); i++ {
		var g, w string
		if i < len(got) {
			g = got[i]
		}
		if i < len(want) {
			w = want[i]
		}
		if g != w {
			t.Errorf("arg %d: got %q, want %q", i, g, w)
		}
	}
}

// commonArgs is the prefix every VM gets, up to and including pvpanic.
func commonArgs(name, machine, accel, cpu, smp, mem, clock, runDir string) []string {
	return []string{
		"-name", "guest=" + name + ",debug-threads=on",
		"-uuid", testUUID,
		"-machine", machine,
		"-accel", accel,
		"-cpu", cpu,
		"-smp", smp,
		"-m", mem,
		"-nodefaults", "-no-user-config", "-no-shutdown",
		"-msg", "timestamp=on",
		"-display", "none",
		"-rtc", "base=" + clock,
		"-vga", "std",
		"-vnc", "unix:" + runDir + "/vnc.sock",
		"-chardev", "socket,id=serial0,path=" + runDir + "/serial.sock,server=on,wait=off",
		"-serial", "chardev:serial0",
		"-qmp", "unix:" + runDir + "/qmp.sock,server=on,wait=off",
		"-pidfile", runDir + "/qemu.pid",
		"-device", "pvpanic",
	}
}

func TestArgsLinuxVirtioVM(t *testing.T) {
	cfg := Config{
		Name: "tenant-a_vm1", UUID: testUUID, CPUs: 2, MemoryMiB: 2048,
		RunDir: "/run/kumo/vms/tenant-a_vm1",
		Disks: []Disk{
			{ID: "root", Path: "/var/lib/kumo/disks/root.qcow2", Format: "qcow2", Bus: BusVirtio, BootIndex: 1},
			{ID: "data", Path: "/var/lib/kumo/disks/data.raw", Format: "raw", Bus: BusVirtio},
			{ID: "seed", Path: "/run/kumo/vms/tenant-a_vm1/seed.iso", Bus: BusVirtio, CDROM: true},
		},
		NICs: []NIC{{ID: "eth0", Tap: "kt-1a2b3c", MAC: "52:54:00:AB:cd:01"}},
	}
	rd := cfg.RunDir
	want := commonArgs("tenant-a_vm1", "q35", "tcg", "qemu64", "2,sockets=1,cores=2,threads=1", "2048", "utc", rd)
	want = append(want,
		"-blockdev", `{"driver":"file","node-name":"file-root","filename":"/var/lib/kumo/disks/root.qcow2","read-only":false}`,
		"-blockdev", `{"driver":"qcow2","node-name":"drive-root","file":"file-root","read-only":false}`,
		"-device", "virtio-blk-pci,id=disk-root,drive=drive-root,bootindex=1",
		"-blockdev", `{"driver":"file","node-name":"file-data","filename":"/var/lib/kumo/disks/data.raw","read-only":false}`,
		"-blockdev", `{"driver":"raw","node-name":"drive-data","file":"file-data","read-only":false}`,
		"-device", "virtio-blk-pci,id=disk-data,drive=drive-data",
		"-blockdev", `{"driver":"file","node-name":"file-seed","filename":"/run/kumo/vms/tenant-a_vm1/seed.iso","read-only":true}`,
		"-blockdev", `{"driver":"raw","node-name":"drive-seed","file":"file-seed","read-only":true}`,
		"-device", "ide-cd,bus=ide.0,id=disk-seed,drive=drive-seed",
		"-netdev", "tap,id=net-eth0,ifname=kt-1a2b3c,script=no,downscript=no",
		"-device", "virtio-net-pci,id=nic-eth0,netdev=net-eth0,mac=52:54:00:ab:cd:01",
	)
	diffArgs(t, mustArgs(t, cfg), want)
}

func TestArgsWindowsSATAUEFIVM(t *testing.T) {
	code := fakeOVMF(t)
	cfg := Config{
		Name: "tenant-b_win", UUID: testUUID, Accel: AccelKVM, Machine: "q35", CPUs: 4, MemoryMiB: 8192,
		Firmware: FirmwareUEFI, Clock: "localtime", Tablet: true, HyperV: true,
		RunDir: "/run/kumo/vms/tenant-b_win",
		Disks: []Disk{
			{ID: "c", Path: "/disks/win.qcow2", Format: "qcow2", Bus: BusSATA, BootIndex: 2},
			{ID: "install", Path: "/isos/win.iso", Bus: BusSATA, CDROM: true, BootIndex: 1},
		},
		NICs: []NIC{{ID: "lan", Tap: "kt-win", MAC: "52:54:00:00:00:02", Model: "e1000e"}},
	}
	rd := cfg.RunDir
	want := commonArgs("tenant-b_win", "q35,pflash0=pflash0,pflash1=pflash1", "kvm",
		"host,hv-relaxed,hv-vapic,hv-spinlocks=0x1fff,hv-time", "4,sockets=1,cores=4,threads=1", "8192", "localtime", rd)
	want = append(want,
		"-blockdev", `{"driver":"file","node-name":"pflash0","filename":"`+code+`","read-only":true}`,
		"-blockdev", `{"driver":"file","node-name":"pflash1","filename":"/run/kumo/vms/tenant-b_win/OVMF_VARS.fd","read-only":false}`,
		"-device", "qemu-xhci,id=usb0",
		"-device", "usb-tablet,id=tablet0,bus=usb0.0",
		"-blockdev", `{"driver":"file","node-name":"file-c","filename":"/disks/win.qcow2","read-only":false}`,
		"-blockdev", `{"driver":"qcow2","node-name":"drive-c","file":"file-c","read-only":false}`,
		"-device", "ide-hd,bus=ide.0,id=disk-c,drive=drive-c,bootindex=2",
		"-blockdev", `{"driver":"file","node-name":"file-install","filename":"/isos/win.iso","read-only":true}`,
		"-blockdev", `{"driver":"raw","node-name":"drive-install","file":"file-install","read-only":true}`,
		"-device", "ide-cd,bus=ide.1,id=disk-install,drive=drive-install,bootindex=1",
		"-netdev", "tap,id=net-lan,ifname=kt-win,script=no,downscript=no",
		"-device", "e1000e,id=nic-lan,netdev=net-lan,mac=52:54:00:00:00:02",
	)
	diffArgs(t, mustArgs(t, cfg), want)
}

func TestArgsSCSIVM(t *testing.T) {
	cfg := Config{
		Name: "vm-scsi", UUID: testUUID, CPUs: 1, MemoryMiB: 512, RunDir: "/r",
		Disks: []Disk{
			{ID: "root", Path: "/d/root.raw", Format: "raw", Bus: BusSCSI, BootIndex: 1},
			{ID: "logs", Path: "/d/logs.qcow2", Format: "qcow2", Bus: BusSCSI, ReadOnly: true},
			{ID: "cd", Path: "/d/tools.iso", Bus: BusSCSI, CDROM: true},
		},
	}
	want := commonArgs("vm-scsi", "q35", "tcg", "qemu64", "1,sockets=1,cores=1,threads=1", "512", "utc", "/r")
	want = append(want,
		"-device", "virtio-scsi-pci,id=scsi0",
		"-blockdev", `{"driver":"file","node-name":"file-root","filename":"/d/root.raw","read-only":false}`,
		"-blockdev", `{"driver":"raw","node-name":"drive-root","file":"file-root","read-only":false}`,
		"-device", "scsi-hd,bus=scsi0.0,channel=0,scsi-id=0,lun=0,id=disk-root,drive=drive-root,bootindex=1",
		"-blockdev", `{"driver":"file","node-name":"file-logs","filename":"/d/logs.qcow2","read-only":true}`,
		"-blockdev", `{"driver":"qcow2","node-name":"drive-logs","file":"file-logs","read-only":true}`,
		"-device", "scsi-hd,bus=scsi0.0,channel=0,scsi-id=1,lun=0,id=disk-logs,drive=drive-logs",
		"-blockdev", `{"driver":"file","node-name":"file-cd","filename":"/d/tools.iso","read-only":true}`,
		"-blockdev", `{"driver":"raw","node-name":"drive-cd","file":"file-cd","read-only":true}`,
		"-device", "scsi-cd,bus=scsi0.0,channel=0,scsi-id=2,lun=0,id=disk-cd,drive=drive-cd",
	)
	diffArgs(t, mustArgs(t, cfg), want)
}

// TestArgsCDROMsAndBootOrder checks that CD-ROMs of virtio VMs land on consecutive AHCI ports, that
// bootindex follows each disk, and that a "pc" machine gets its own AHCI controller.
func TestArgsCDROMsAndBootOrder(t *testing.T) {
	for _, tc := range []struct {
		machine, ahciBus string
		controller       []string
	}{
		{"q35", "ide", nil},
		{"pc", "sata0", []string{"-device", "ich9-ahci,id=sata0"}},
	} {
		t.Run(tc.machine, func(t *testing.T) {
			cfg := Config{
				Name: "vm", UUID: testUUID, Machine: tc.machine, CPUs: 1, MemoryMiB: 256, RunDir: "/r",
				Disks: []Disk{
					{ID: "cd1", Path: "/i/a.iso", Bus: BusVirtio, CDROM: true, BootIndex: 3},
					{ID: "root", Path: "/d/root.qcow2", Format: "qcow2", Bus: BusVirtio, BootIndex: 2},
					{ID: "cd2", Path: "/i/b.iso", Bus: BusSATA, CDROM: true, BootIndex: 1},
					{ID: "sata", Path: "/d/s.raw", Format: "raw", Bus: BusSATA},
				},
			}
			var devices []string
			args := mustArgs(t, cfg)
			for i := 0; i+1 < len(args); i++ {
				if args[i] == "-device" && !strings.HasPrefix(args[i+1], "pvpanic") {
					devices = append(devices, "-device", args[i+1])
				}
			}
			want := append(tc.controller,
				"-device", "ide-cd,bus="+tc.ahciBus+".0,id=disk-cd1,drive=drive-cd1,bootindex=3",
				"-device", "virtio-blk-pci,id=disk-root,drive=drive-root,bootindex=2",
				"-device", "ide-cd,bus="+tc.ahciBus+".1,id=disk-cd2,drive=drive-cd2,bootindex=1",
				"-device", "ide-hd,bus="+tc.ahciBus+".2,id=disk-sata,drive=drive-sata",
			)
			diffArgs(t, devices, want)
		})
	}
}

func TestArgsAreDeterministic(t *testing.T) {
	cfg := Config{Name: "vm", UUID: testUUID, CPUs: 1, MemoryMiB: 256, RunDir: "/r",
		Disks: []Disk{{ID: "a", Path: "/a", Format: "raw", Bus: BusSCSI}, {ID: "b", Path: "/b", Format: "raw", Bus: BusSATA}}}
	first := mustArgs(t, cfg)
	for range 20 {
		diffArgs(t, mustArgs(t, cfg), first)
	}
}

func TestArgsEscapeCommasInPaths(t *testing.T) {
	cfg := Config{Name: "vm", UUID: testUUID, CPUs: 1, MemoryMiB: 256, RunDir: "/run/a,b",
		Disks: []Disk{{ID: "a", Path: "/d/x,y.raw", Format: "raw", Bus: BusVirtio}}}
	args := strings.Join(mustArgs(t, cfg), " ")
	for _, want := range []string{
		"-vnc unix:/run/a,,b/vnc.sock",
		"path=/run/a,,b/serial.sock,server=on",
		"-qmp unix:/run/a,,b/qmp.sock,server=on,wait=off",
		`"filename":"/d/x,y.raw"`, // JSON needs no escaping
	} {
		if !strings.Contains(args, want) {
			t.Errorf("args lack %q:\n%s", want, args)
		}
	}
}

func TestArgsUEFIWithoutOVMFFails(t *testing.T) {
	old := ovmfDirs
	ovmfDirs = []string{t.TempDir()}
	t.Cleanup(func() { ovmfDirs = old })
	cfg := Config{Name: "vm", UUID: testUUID, CPUs: 1, MemoryMiB: 256, RunDir: "/r", Firmware: FirmwareUEFI}
	if _, err := cfg.Args(); err == nil || !strings.Contains(err.Error(), "OVMF") {
		t.Fatalf("Args = %v, want an error about OVMF", err)
	}
}

func TestArgsHyperVIgnoredUnderTCG(t *testing.T) {
	cfg := Config{Name: "vm", UUID: testUUID, CPUs: 1, MemoryMiB: 256, RunDir: "/r", HyperV: true}
	args := strings.Join(mustArgs(t, cfg), " ")
	if strings.Contains(args, "hv-") || strings.Contains(args, "host") {
		t.Fatalf("tcg args carry KVM-only CPU flags: %s", args)
	}
}

func TestArgsSocketsTopologyAndCPUModel(t *testing.T) {
	cfg := Config{Name: "vm", UUID: testUUID, CPUs: 4, Sockets: 2, CPUModel: "Skylake-Server-v4", MemoryMiB: 256, RunDir: "/r"}
	args := strings.Join(mustArgs(t, cfg), " ")
	for _, want := range []string{"-smp 4,sockets=2,cores=2,threads=1", "-cpu Skylake-Server-v4 "} {
		if !strings.Contains(args, want) {
			t.Errorf("args lack %q:\n%s", want, args)
		}
	}
	cfg.Sockets = 3
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "Sockets") {
		t.Errorf("4 CPUs in 3 sockets: Validate = %v, want an error naming Sockets", err)
	}
}

func TestArgsHostCPUModelNeedsKVM(t *testing.T) {
	cfg := Config{Name: "vm", UUID: testUUID, CPUs: 1, CPUModel: "host", MemoryMiB: 256, RunDir: "/r"}
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "CPUModel") {
		t.Errorf("host model under TCG: Validate = %v, want an error naming CPUModel", err)
	}
}

func TestArgsSecureBootUsesMicrosoftKeysAndSMM(t *testing.T) {
	code := fakeOVMF(t)
	dir := filepath.Dir(code)
	cfg := Config{Name: "vm", UUID: testUUID, CPUs: 1, MemoryMiB: 256, RunDir: "/r", Firmware: FirmwareUEFI, SecureBoot: true,
		UEFIVars: "/var/lib/kumo/efivars/vm.fd"}
	args := strings.Join(mustArgs(t, cfg), " ")
	for _, want := range []string{
		"-machine q35,pflash0=pflash0,pflash1=pflash1,smm=on ",
		"-global driver=cfi.pflash01,property=secure,value=on",
		`"filename":"` + filepath.Join(dir, "OVMF_CODE_4M.ms.fd") + `","read-only":true`,
		`"filename":"/var/lib/kumo/efivars/vm.fd","read-only":false`,
	} {
		if !strings.Contains(args, want) {
			t.Errorf("args lack %q:\n%s", want, args)
		}
	}
	cfg.Machine = "pc"
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "SecureBoot") {
		t.Errorf("secure boot on pc: Validate = %v, want an error naming SecureBoot", err)
	}
}

func TestPersistentUEFIVarsAreCopiedOnceFromTheirTemplate(t *testing.T) {
	code := fakeOVMF(t)
	vars := filepath.Join(t.TempDir(), "efivars", "vm.fd")
	cfg := Config{Name: "vm", UUID: testUUID, CPUs: 1, MemoryMiB: 256, RunDir: "/r", Firmware: FirmwareUEFI, SecureBoot: true, UEFIVars: vars}
	if err := prepareUEFIVars(&cfg); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(vars)
	if err != nil || string(got) != "OVMF_VARS_4M.ms.fd" {
		t.Fatalf("variable store = %q, %v; want a copy of the Microsoft-keys template next to %s", got, err, code)
	}
	if err := os.WriteFile(vars, []byte("written by the guest"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := prepareUEFIVars(&cfg); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(vars); string(got) != "written by the guest" {
		t.Fatalf("the next start replaced the VM's variables: %q", got)
	}
}
