package qemu

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

// TestBootsFromEveryBus boots the marker guest from each bus and controller Args can produce, with
// non-bootable media ordered before it, and reads its marker from the serial console.
func TestBootsFromEveryBus(t *testing.T) {
	requireQEMU(t)
	requireQEMUImg(t)
	dir := shortTempDir(t)
	marker := markerDisk(t, dir)
	blank := writeDisk(t, filepath.Join(dir, "blank.img"), nil, nil) // no boot signature
	markerQcow2 := filepath.Join(dir, "marker.qcow2")
	if out, err := exec.Command("qemu-img", "convert", "-f", "raw", "-O", "qcow2", marker, markerQcow2).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img convert: %v: %s", err, out)
	}

	for _, tc := range []struct {
		name    string
		machine string
		disks   []Disk
	}{
		{"pc-sata-on-added-ahci", "pc", []Disk{
			{ID: "data", Path: blank, Format: "raw", Bus: BusVirtio},
			{ID: "boot", Path: marker, Format: "raw", Bus: BusSATA, BootIndex: 1},
		}},
		{"q35-sata-qcow2", "q35", []Disk{
			{ID: "boot", Path: markerQcow2, Format: "qcow2", Bus: BusSATA, BootIndex: 1},
		}},
		{"q35-scsi-after-empty-cdrom", "q35", []Disk{
			{ID: "cd", Path: blank, Bus: BusSCSI, CDROM: true, BootIndex: 1},
			{ID: "boot", Path: marker, Format: "raw", Bus: BusSCSI, BootIndex: 2},
		}},
		// SeaBIOS tries only its first hard disk: without bootindex that would be the blank one.
		{"q35-virtio-by-bootindex-after-ahci-cdrom", "q35", []Disk{
			{ID: "data", Path: blank, Format: "raw", Bus: BusVirtio, ReadOnly: true},
			{ID: "cd", Path: blank, Bus: BusVirtio, CDROM: true, BootIndex: 1},
			{ID: "boot", Path: marker, Format: "raw", Bus: BusVirtio, BootIndex: 2},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := tinyConfig("vm-"+tc.name, filepath.Join(dir, tc.name), "")
			cfg.Machine, cfg.Disks = tc.machine, tc.disks
			startTestVM(t, cfg)
			readSerialUntil(t, cfg.SerialSocket(), bootMarker)
		})
	}
}

// createTap creates a tap device for the test and removes it afterwards.
func createTap(t *testing.T, name string) string {
	t.Helper()
	if out, err := exec.Command("ip", "tuntap", "add", "dev", name, "mode", "tap").CombinedOutput(); err != nil {
		t.Fatalf("create tap %s (needs root and /dev/net/tun): %v: %s", name, err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "tuntap", "del", "dev", name, "mode", "tap").Run() })
	return name
}

// TestStartUEFIWithEveryDeviceKind starts OVMF with every disk bus, CD-ROMs, both NIC models and the
// tablet, and checks QEMU took every block device.
func TestStartUEFIWithEveryDeviceKind(t *testing.T) {
	requireQEMU(t)
	requireQEMUImg(t)
	if _, _, err := uefiFirmware(false); err != nil {
		t.Fatalf("%v", err)
	}
	dir := shortTempDir(t)
	root := filepath.Join(dir, "root.qcow2")
	if out, err := exec.Command("qemu-img", "create", "-f", "qcow2", root, "64M").CombinedOutput(); err != nil {
		t.Fatalf("qemu-img create: %v: %s", err, out)
	}
	raw := func(name string) string { return writeDisk(t, filepath.Join(dir, name+".img"), nil, nil) }
	suffix := os.Getpid() % 100000
	cfg := Config{
		Name: "tenant-b_uefi", UUID: testUUID, Accel: AccelTCG, Machine: "q35", CPUs: 2, MemoryMiB: 256,
		Firmware: FirmwareUEFI, Clock: "localtime", Tablet: true,
		RunDir: filepath.Join(dir, "run"),
		Disks: []Disk{
			{ID: "root", Path: root, Format: "qcow2", Bus: BusVirtio, BootIndex: 1},
			{ID: "sata", Path: raw("sata"), Format: "raw", Bus: BusSATA},
			{ID: "scsi", Path: raw("scsi"), Format: "raw", Bus: BusSCSI, ReadOnly: true},
			{ID: "scsi-cd", Path: raw("scsi-cd"), Bus: BusSCSI, CDROM: true},
			{ID: "sata-cd", Path: raw("sata-cd"), Bus: BusSATA, CDROM: true, BootIndex: 2},
		},
		NICs: []NIC{
			{ID: "eth0", Tap: createTap(t, fmt.Sprintf("kqv%d", suffix)), MAC: "52:54:00:00:00:01", Model: "virtio"},
			{ID: "eth1", Tap: createTap(t, fmt.Sprintf("kqe%d", suffix)), MAC: "52:54:00:00:00:02", Model: "e1000e"},
		},
	}
	v, ready := startTestVM(t, cfg)
	t.Logf("UEFI VM QMP ready after %s", ready)
	// OVMF's boot manager reports on the serial console: the firmware really runs from pflash.
	readSerialUntil(t, cfg.SerialSocket(), "BdsDxe")
	ctx := context.Background()
	if st, err := v.Status(ctx); err != nil || st != StatusRunning {
		t.Fatalf("Status = %q, %v", st, err)
	}

	var blocks []struct {
		Inserted *struct {
			NodeName string `json:"node-name"`
			ReadOnly bool   `json:"ro"`
		} `json:"inserted"`
	}
	if err := v.mon.Execute(ctx, "query-block", nil, &blocks); err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{} // node name → read-only
	for _, b := range blocks {
		if b.Inserted != nil {
			got[b.Inserted.NodeName] = b.Inserted.ReadOnly
		}
	}
	for _, d := range cfg.Disks {
		ro, ok := got["drive-"+d.ID]
		if !ok {
			t.Errorf("disk %s not attached; block devices: %v", d.ID, got)
		} else if want := d.ReadOnly || d.CDROM; ro != want {
			t.Errorf("disk %s read-only = %v, want %v", d.ID, ro, want)
		}
	}
	var peripherals []struct {
		Name string `json:"name"`
		Type string `json:"type"`
	}
	if err := v.mon.Execute(ctx, "qom-list", map[string]string{"path": "/machine/peripheral"}, &peripherals); err != nil {
		t.Fatal(err)
	}
	var devices []string
	for _, p := range peripherals {
		devices = append(devices, p.Name+"="+p.Type)
	}
	for _, want := range []string{"nic-eth0=child<virtio-net-pci>", "nic-eth1=child<e1000e>", "tablet0=child<usb-tablet>",
		"disk-sata-cd=child<ide-cd>", "disk-scsi-cd=child<scsi-cd>", "disk-root=child<virtio-blk-pci>"} {
		if !slices.Contains(devices, want) {
			t.Errorf("no device %s among %v", want, devices)
		}
	}

	if st, err := os.Stat(cfg.UEFIVarsFile()); err != nil || st.Mode() != 0o600 {
		t.Errorf("UEFI vars copy: %v, %v", st, err)
	}
	if err := v.Stop(ctx, 500*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(cfg.UEFIVarsFile()); err != nil {
		t.Errorf("Stop removed the UEFI variable store: %v", err)
	}
}

func TestUEFIVarsCopiedOnceAndKept(t *testing.T) {
	fakeOVMF(t)
	cfg := Config{Name: "vm", RunDir: t.TempDir()}
	if err := prepareUEFIVars(&cfg); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(cfg.UEFIVarsFile())
	if err != nil || string(b) != "OVMF_VARS_4M.fd" {
		t.Fatalf("vars copy holds %q, %v; want the 4M template", b, err)
	}
	if err := os.WriteFile(cfg.UEFIVarsFile(), []byte("guest boot entries"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := prepareUEFIVars(&cfg); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(cfg.UEFIVarsFile()); string(b) != "guest boot entries" {
		t.Fatalf("second start overwrote the guest's UEFI variables: %q", b)
	}
}
