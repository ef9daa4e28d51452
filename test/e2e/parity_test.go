package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	apps "kumo.dev/kumo/pkg/apis/apps/v1alpha1"
	kumo "kumo.dev/kumo/pkg/apis/kumo/v1alpha1"
)

// everyFieldVM is a VMInstance using every field of Cozystack's vm-instance app, next to a VMDisk
// using every field of its vm-disk app. The VM is Halted: it is only stored and read back.
const everyFieldVM = `apiVersion: apps.cozystack.io/v1alpha1
kind: VMDisk
metadata:
  name: every-disk
spec:
  source:
    image:
      name: kumo-tiny
  optical: false
  storage: 1Gi
  storageClass: local
  schedulingClass: co-region-prod
---
apiVersion: apps.cozystack.io/v1alpha1
kind: VMInstance
metadata:
  name: every-field
spec:
  external: false
  externalMethod: PortList
  externalPorts: [22, 443]
  externalAllowICMP: false
  runStrategy: Halted
  instanceType: u1.medium
  instanceProfile: ubuntu
  disks:
  - name: every-disk
    bus: sata
  networks:
  - name: subnet-84dbec17
  subnets: []
  gpus: []
  cpuModel: qemu64
  firmware:
    bootloader: uefi
    secureBoot: true
    efiPersistent: true
  resources:
    cpu: 2
    memory: 1Gi
    sockets: "1"
  netplanDhcp: true
  schedulingClass: co-region-prod
  sshKeys: []
  cloudInit: |
    #cloud-config
    password: ubuntu
  cloudInitSeed: upd1
`

// hikubeQuickStartVM carries resources with empty strings, as Hikube's own examples write it.
const hikubeQuickStartVM = `apiVersion: apps.cozystack.io/v1alpha1
kind: VMInstance
metadata:
  name: quick
spec:
  runStrategy: Halted
  instanceType: u1.medium
  instanceProfile: ubuntu
  resources:
    cpu: ""
    memory: ""
    sockets: ""
  gpus: []
  disks: []
`

func TestEveryCozystackFieldAppliesAndShows(t *testing.T) {
	c := startAllInOne(t)
	kc := c.NewTenant(t, "every")
	for _, m := range []string{everyFieldVM, hikubeQuickStartVM} {
		if r := Run(kc, m, bins.kumo, "apply", "-f", "-"); r.Err != nil {
			t.Fatalf("apply: %s", r)
		}
		if r := Run(kc, m, bins.kubectl, "apply", "--server-side", "--force-conflicts", "-f", "-"); r.Err != nil {
			t.Fatalf("kubectl apply --server-side: %s", r)
		}
	}
	out := c.MustKumo(t, kc, "get", "vm", "every-field", "-o", "yaml")
	for _, want := range []string{
		"externalAllowICMP: false", "bus: sata", "name: subnet-84dbec17", "cpuModel: qemu64",
		"bootloader: uefi", "secureBoot: true", "efiPersistent: true", `cpu: "2"`, "memory: 1Gi",
		"netplanDhcp: true", "schedulingClass: co-region-prod",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("get -o yaml lacks %q:\n%s", want, out)
		}
	}
	if out := c.MustKumo(t, kc, "get", "vmd", "every-disk", "-o", "yaml"); !strings.Contains(out, "schedulingClass: co-region-prod") {
		t.Errorf("disk lacks schedulingClass:\n%s", out)
	}
	if out := c.MustKumo(t, kc, "explain", "vminstance.spec.firmware"); !strings.Contains(out, "efiPersistent") || !strings.Contains(out, "secureBoot") {
		t.Errorf("explain vminstance.spec.firmware:\n%s", out)
	}

	// Invalid combinations: 422s naming the fields.
	for _, tc := range []struct{ edit, field string }{
		{"    sockets: \"1\"\n", "spec.resources.memory"},
		{"    bus: sata\n", "spec.disks[0].bus"},
		{"    secureBoot: true\n", "spec.firmware.secureBoot"},
		{"  gpus: []\n", "spec.gpus"},
		{"  cpuModel: qemu64\n", "spec.cpuModel"},
	} {
		bad := everyFieldVM
		switch tc.field {
		case "spec.resources.memory":
			bad = strings.Replace(bad, "    memory: 1Gi\n", "", 1)
		case "spec.disks[0].bus":
			bad = strings.Replace(bad, tc.edit, "    bus: ide\n", 1)
		case "spec.firmware.secureBoot":
			bad = strings.Replace(bad, "    bootloader: uefi\n", "    bootloader: bios\n", 1)
		case "spec.gpus":
			bad = strings.Replace(bad, tc.edit, "  gpus:\n  - name: nvidia.com/GA102GL_A10\n", 1)
		case "spec.cpuModel":
			bad = strings.Replace(bad, tc.edit, "  cpuModel: Pentium-Pro-9000\n", 1)
		}
		bad = strings.Replace(bad, "name: every-field", "name: bad-fields", 1)
		r := Run(kc, bad, bins.kumo, "apply", "-f", "-")
		if r.Err == nil || !strings.Contains(r.Stderr, tc.field) {
			t.Errorf("%s: want a refusal naming it, got %s", tc.field, r)
		}
	}
}

// TestResourcesSizeTheVMAndSATADiskIsAHCI runs a VM sized by resources (no instance type) with a
// data disk on bus sata and checks both inside the guest and on QEMU's command line.
func TestResourcesSizeTheVMAndSATADiskIsAHCI(t *testing.T) {
	c := startAllInOne(t, "--cpus", "4")
	kc := c.NewTenant(t, "sized")
	m := tinyVM("sized", "sized-sys", `  - name: sized-data
    bus: sata
  resources:
    cpu: 1
    sockets: 2
    memory: 384Mi
`) + `---
apiVersion: apps.cozystack.io/v1alpha1
kind: VMDisk
metadata:
  name: sized-data
spec:
  storage: 64Mi
  storageClass: local
`
	m = strings.Replace(m, "  instanceType: s1.small\n", "", 1)
	if r := Run(kc, m, bins.kumo, "apply", "-f", "-"); r.Err != nil {
		t.Fatal(r)
	}
	cl := c.Client(t, kc)
	waitVM(t, cl, kumo.TenantNamespace("sized"), "sized", "Running", bootTimeout, running)
	eventually(t, bootTimeout, "the guest's marker", func() bool {
		return strings.Contains(c.MustKumo(t, kc, "console", "sized", "--show-log"), "KUMO-GUEST-READY")
	})
	// The seed is a virtio disk now: the marker carries its instance-id.
	if log := c.MustKumo(t, kc, "console", "sized", "--show-log"); strings.Contains(grepLine(log, "KUMO-GUEST-READY"), "instance-id=none") {
		t.Errorf("the guest did not read its seed: %s", grepLine(log, "KUMO-GUEST-READY"))
	}
	pids := qemuPIDsUnder(c.Dir)
	if len(pids) != 1 {
		t.Fatalf("QEMU processes: %v", pids)
	}
	cmdline, _ := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pids[0]), "cmdline"))
	args := strings.ReplaceAll(string(cmdline), "\x00", " ")
	for _, want := range []string{"-smp 2,sockets=2,cores=1,threads=1", "-m 384 "} {
		if !strings.Contains(args, want) {
			t.Errorf("QEMU command line lacks %q: %s", want, args)
		}
	}
	r := consoleRun(kc, "sized", `echo cpus=$(grep -c ^processor /proc/cpuinfo) sockets=$(grep '^physical id' /proc/cpuinfo | sort -u | wc -l) mem=$(awk '/MemTotal/{print $2}' /proc/meminfo) sda=$(readlink -f /sys/block/sda)`)
	// The guest's answer, not the echoed command line (which also holds "cpus=").
	var line string
	for _, l := range strings.Split(r.Stdout, "\n") {
		if strings.HasPrefix(strings.TrimSpace(l), "cpus=") {
			line = strings.TrimSpace(l)
		}
	}
	if !strings.Contains(line, "cpus=2 ") || !strings.Contains(line, "sockets=2 ") {
		t.Errorf("guest CPUs: %q (%s)", line, r)
	}
	var memKiB int
	_, mem, _ := strings.Cut(line, "mem=")
	if _, err := fmt.Sscanf(mem, "%d", &memKiB); err != nil || memKiB < 300<<10 || memKiB > 384<<10 {
		t.Errorf("guest MemTotal %d KiB, want a little under 384 MiB (%q)", memKiB, line)
	}
	// An AHCI disk sits under an ataN host in sysfs; a virtio disk would be vdX.
	if !strings.Contains(line, "/ata") {
		t.Errorf("the sata disk is not an AHCI disk in the guest: %q", line)
	}
}

// TestEFIPersistentKeepsTheVariableStore: a UEFI VM with efiPersistent keeps its variable store
// across incarnations. OVMF writes its boot entries into the store at the first boot; the test
// checks that the store changed from the pristine template, and that the next incarnation
// opens the same store, not a fresh copy.
func TestEFIPersistentKeepsTheVariableStore(t *testing.T) {
	c := startAllInOne(t)
	kc := c.NewTenant(t, "efi")
	m := tinyVM("efi", "efi-sys", "  firmware:\n    bootloader: uefi\n    efiPersistent: true\n")
	if r := Run(kc, m, bins.kumo, "apply", "-f", "-"); r.Err != nil {
		t.Fatal(r)
	}
	cl := c.Client(t, kc)
	ns := kumo.TenantNamespace("efi")
	vm := waitVM(t, cl, ns, "efi", "Running", bootTimeout, running)
	store := filepath.Join(c.Dir, "efivars", ns, "efi-"+string(vm.UID)+".fd")
	template, err := os.ReadFile("/usr/share/OVMF/OVMF_VARS_4M.fd")
	if err != nil {
		t.Fatal(err)
	}
	var first []byte
	eventually(t, bootTimeout, "OVMF to write its variables", func() bool {
		first, _ = os.ReadFile(store)
		return len(first) == len(template) && string(first) != string(template)
	})
	c.MustKumo(t, kc, "stop", "efi")
	waitVM(t, cl, ns, "efi", "Stopped", time.Minute, func(v *apps.VMInstance) bool { return v.Status.Phase == apps.VMStopped && v.Status.Node == "" })
	after, err := os.ReadFile(store)
	if err != nil || string(after) == string(template) {
		t.Fatalf("the variable store did not survive the incarnation's end: %v", err)
	}
	// The next incarnation must open this very file: a fresh copy of the template would be a
	// new file (copies are written aside and renamed into place), with a new inode.
	before, err := os.Stat(store)
	if err != nil {
		t.Fatal(err)
	}
	c.MustKumo(t, kc, "start", "efi")
	waitVM(t, cl, ns, "efi", "Running again", bootTimeout, func(v *apps.VMInstance) bool { return running(v) && v.Status.Incarnation == 2 })
	pids := qemuPIDsUnder(c.Dir)
	if len(pids) != 1 {
		t.Fatalf("QEMU processes: %v", pids)
	}
	cmdline, _ := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pids[0]), "cmdline"))
	if !strings.Contains(string(cmdline), store) {
		t.Errorf("the second incarnation does not open the kept store %s: %s", store, strings.ReplaceAll(string(cmdline), "\x00", " "))
	}
	now, err := os.Stat(store)
	if err != nil || !os.SameFile(before, now) {
		t.Errorf("the variable store was replaced at the second start (%v)", err)
	}
	if data, _ := os.ReadFile(store); string(data) == string(template) {
		t.Errorf("the second incarnation starts from pristine variables")
	}
}
