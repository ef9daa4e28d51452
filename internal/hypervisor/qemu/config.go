package qemu

import (
	"errors"
	"fmt"
	"path/filepath"
	"regexp"
	"strings"
)

// Defaults applied by Config.withDefaults when a field is left empty.
const (
	DefaultBinary  = "qemu-system-x86_64"
	DefaultMachine = "q35"
	DefaultAccel   = "tcg"
	DefaultClock   = "utc"
)

// Accelerators.
const (
	AccelKVM = "kvm"
	AccelTCG = "tcg"
)

// Disk buses.
const (
	BusVirtio = "virtio"
	BusSCSI   = "scsi"
	BusSATA   = "sata"
)

// Disk drivers (the QEMU block protocol driver that opens Disk.Path).
const (
	DriverFile = "file"
	DriverRBD  = "rbd" // Ceph RBD through QEMU's librbd driver
)

// Firmware selects what the VM boots with.
type Firmware string

const (
	// FirmwareBIOS is SeaBIOS, QEMU's default.
	FirmwareBIOS Firmware = "bios"
	// FirmwareUEFI is OVMF; its variable store is copied into RunDir on first start.
	FirmwareUEFI Firmware = "uefi"
)

// Config describes one VM incarnation. Everything QEMU needs comes from here; no string maps.
type Config struct {
	Name    string // e.g. "tenant-a_vm1", used for -name, logs and the cgroup
	UUID    string // SMBIOS uuid (the VMInstance UID)
	Binary  string // default "qemu-system-x86_64"
	Accel   string // "kvm" or "tcg" (default "tcg")
	Machine string // "q35" (default) or "pc"
	CPUs    int
	// Sockets splits CPUs into sockets of CPUs/Sockets cores each (default 1 socket).
	Sockets int
	// CPUModel is the guest's CPU model; empty: "host" under KVM, qemu64 under TCG.
	CPUModel  string
	MemoryMiB int64
	Firmware  Firmware // FirmwareBIOS (default) or FirmwareUEFI
	// SecureBoot boots OVMF's Secure Boot build with Microsoft's keys enrolled; it needs UEFI
	// and q35, and turns on SMM.
	SecureBoot bool
	// UEFIVars is the VM's variable store; empty: OVMF_VARS.fd in RunDir, which goes with the
	// run directory. A path outside RunDir keeps the variables across incarnations.
	UEFIVars string
	Clock    string // "utc" (default) or "localtime"
	Tablet   bool   // USB tablet, so a VNC pointer maps absolutely
	HyperV   bool   // Hyper-V enlightenments; only applied under kvm
	Disks    []Disk
	NICs     []NIC
	RunDir   string // absolute per-VM directory, mode 0700: sockets, pid file, log, UEFI vars
}

// Disk is one block device of the VM.
type Disk struct {
	ID string // unique within the VM, [a-z0-9-]
	// Name is the caller's name of the volume (e.g. the VMDisk), kept with the configuration so
	// that a running VM's disks are found by name, never by their position in a list that may
	// have changed since the start. Not passed to QEMU.
	Name      string
	Path      string // file path of the image
	Driver    string // "file" (default); "rbd" later
	Format    string // "qcow2" or "raw"; CD-ROMs default to "raw"
	Bus       string // "virtio", "scsi" or "sata"
	CDROM     bool   // attach as CD-ROM (always read-only)
	ReadOnly  bool
	BootIndex int // 1-based boot order; 0 = not bootable
	// KeyFile, when set, holds the passphrase of the disk's LUKS encryption (qcow2's built-in
	// LUKS, or LUKS2 on an RBD image); QEMU reads it through a secret object, it never appears on
	// the command line.
	KeyFile string
	// RBD locates a Driver "rbd" disk.
	RBD *RBDImage
}

// RBDImage is a Ceph RBD image QEMU opens with librbd.
type RBDImage struct {
	Pool, Namespace, Image string
	// Conf is the ceph.conf path; User the cephx user (its keyring is found through Conf).
	Conf, User string
}

// NIC is one network interface backed by an existing tap device.
type NIC struct {
	ID    string // unique within the VM, [a-z0-9-]
	Tap   string // existing tap device name
	MAC   string // e.g. "52:54:00:12:34:56"
	Model string // "virtio" (default) or "e1000e"
}

// Files inside RunDir.
const (
	qmpSocketName    = "qmp.sock"
	serialSocketName = "serial.sock"
	vncSocketName    = "vnc.sock"
	pidFileName      = "qemu.pid"
	logFileName      = "qemu.log"
	uefiVarsName     = "OVMF_VARS.fd"
)

// QMPSocket is where QEMU's QMP monitor listens.
func (c *Config) QMPSocket() string { return filepath.Join(c.RunDir, qmpSocketName) }

// SerialSocket is where the guest's first serial port (ttyS0 / COM1) listens.
func (c *Config) SerialSocket() string { return filepath.Join(c.RunDir, serialSocketName) }

// VNCSocket is where the VNC server listens.
func (c *Config) VNCSocket() string { return filepath.Join(c.RunDir, vncSocketName) }

// PIDFile is QEMU's pid file.
func (c *Config) PIDFile() string { return filepath.Join(c.RunDir, pidFileName) }

// LogFile receives QEMU's stdout and stderr, appended across incarnations.
func (c *Config) LogFile() string { return filepath.Join(c.RunDir, logFileName) }

// UEFIVarsFile is the VM's private copy of the OVMF variable store.
func (c *Config) UEFIVarsFile() string {
	if c.UEFIVars != "" {
		return c.UEFIVars
	}
	return filepath.Join(c.RunDir, uefiVarsName)
}

// Limits checked by Validate.
const (
	maxIDLen = 24 // device ids get a prefix; QEMU node names are at most 31 characters
	// maxSocketPath is sun_path's size minus the terminating NUL.
	maxSocketPath = 107
	// sataPorts is the number of ports of the ICH9 AHCI controller.
	sataPorts = 6
	maxCPUs   = 288
	minMemMiB = 16
)

var (
	idPattern       = regexp.MustCompile(`^[a-z0-9][a-z0-9-]*$`)
	namePattern     = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)
	cpuModelPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)
	uuidPattern     = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)
	macPattern      = regexp.MustCompile(`^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$`)
	// tapPattern follows the kernel's interface name rules (IFNAMSIZ 16 including NUL).
	tapPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,14}$`)
)

// withDefaults returns a copy with empty fields filled in.
func (c Config) withDefaults() Config {
	if c.Binary == "" {
		c.Binary = DefaultBinary
	}
	if c.Accel == "" {
		c.Accel = DefaultAccel
	}
	if c.Machine == "" {
		c.Machine = DefaultMachine
	}
	if c.Firmware == "" {
		c.Firmware = FirmwareBIOS
	}
	if c.Clock == "" {
		c.Clock = DefaultClock
	}
	if c.Sockets == 0 {
		c.Sockets = 1
	}
	c.Disks = append([]Disk(nil), c.Disks...)
	for i := range c.Disks {
		d := &c.Disks[i]
		if d.Driver == "" {
			d.Driver = DriverFile
		}
		if d.Format == "" && d.CDROM {
			d.Format = "raw"
		}
		if d.CDROM {
			d.ReadOnly = true
		}
	}
	c.NICs = append([]NIC(nil), c.NICs...)
	for i := range c.NICs {
		if c.NICs[i].Model == "" {
			c.NICs[i].Model = "virtio"
		}
	}
	return c
}

// Validate checks the configuration (after defaults) and reports every problem, each naming its
// field.
func (c *Config) Validate() error {
	d := c.withDefaults()
	return d.validate()
}

func (c *Config) validate() error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", field, fmt.Sprintf(format, args...)))
	}

	if !namePattern.MatchString(c.Name) || len(c.Name) > 128 {
		bad("Name", "%q must be 1-128 characters of [A-Za-z0-9._-], starting with a letter or digit", c.Name)
	}
	if !uuidPattern.MatchString(c.UUID) {
		bad("UUID", "%q is not a UUID", c.UUID)
	}
	if c.Accel != AccelKVM && c.Accel != AccelTCG {
		bad("Accel", "%q must be %q or %q", c.Accel, AccelKVM, AccelTCG)
	}
	if c.Machine != "q35" && c.Machine != "pc" {
		bad("Machine", "%q must be \"q35\" or \"pc\"", c.Machine)
	}
	if c.CPUs < 1 || c.CPUs > maxCPUs {
		bad("CPUs", "%d must be between 1 and %d", c.CPUs, maxCPUs)
	}
	if c.Sockets < 1 || c.CPUs%c.Sockets != 0 {
		bad("Sockets", "%d must be at least 1 and divide CPUs (%d)", c.Sockets, c.CPUs)
	}
	if c.CPUModel != "" && !cpuModelPattern.MatchString(c.CPUModel) {
		bad("CPUModel", "%q is not a QEMU CPU model name", c.CPUModel)
	}
	if c.CPUModel == "host" && c.Accel != AccelKVM {
		bad("CPUModel", "\"host\" needs the kvm accelerator (this node runs %s)", c.Accel)
	}
	if c.SecureBoot && (c.Firmware != FirmwareUEFI || c.Machine != "q35") {
		bad("SecureBoot", "needs UEFI firmware and the q35 machine (firmware %q, machine %q)", c.Firmware, c.Machine)
	}
	if c.UEFIVars != "" && !filepath.IsAbs(c.UEFIVars) {
		bad("UEFIVars", "%q must be an absolute path", c.UEFIVars)
	}
	if c.MemoryMiB < minMemMiB {
		bad("MemoryMiB", "%d must be at least %d", c.MemoryMiB, minMemMiB)
	}
	if c.Firmware != FirmwareBIOS && c.Firmware != FirmwareUEFI {
		bad("Firmware", "%q must be %q or %q", c.Firmware, FirmwareBIOS, FirmwareUEFI)
	}
	if c.Clock != "utc" && c.Clock != "localtime" {
		bad("Clock", "%q must be \"utc\" or \"localtime\"", c.Clock)
	}
	switch {
	case c.RunDir == "":
		bad("RunDir", "is required")
	case !filepath.IsAbs(c.RunDir):
		bad("RunDir", "%q must be an absolute path", c.RunDir)
	case len(c.QMPSocket()) > maxSocketPath || len(c.SerialSocket()) > maxSocketPath:
		bad("RunDir", "%q is too long for unix socket paths inside it (max %d bytes)", c.RunDir, maxSocketPath)
	}

	errs = append(errs, c.validateDisks()...)
	errs = append(errs, c.validateNICs()...)
	return errors.Join(errs...)
}

func (c *Config) validateDisks() []error {
	var errs []error
	ids := map[string]bool{}
	boot := map[int]string{}
	ahci := 0
	for i, d := range c.Disks {
		field := fmt.Sprintf("Disks[%d]", i)
		bad := func(sub, format string, args ...any) {
			errs = append(errs, fmt.Errorf("%s.%s: %s", field, sub, fmt.Sprintf(format, args...)))
		}
		switch {
		case !idPattern.MatchString(d.ID) || len(d.ID) > maxIDLen:
			bad("ID", "%q must be 1-%d characters of [a-z0-9-]", d.ID, maxIDLen)
		case ids[d.ID]:
			bad("ID", "duplicate disk id %q", d.ID)
		}
		ids[d.ID] = true
		switch d.Driver {
		case DriverFile:
			if d.Path == "" {
				bad("Path", "is required")
			} else if !filepath.IsAbs(d.Path) {
				bad("Path", "%q must be an absolute path", d.Path)
			}
		case DriverRBD:
			if d.RBD == nil || d.RBD.Pool == "" || d.RBD.Image == "" || d.RBD.Conf == "" {
				bad("RBD", "an rbd disk needs pool, image and conf")
			} else if d.KeyFile != "" && d.Format != "raw" {
				bad("Format", "an encrypted rbd disk is raw under its LUKS2 layer")
			}
		default:
			bad("Driver", "unknown driver %q (want %q)", d.Driver, DriverFile)
		}
		if d.Format != "qcow2" && d.Format != "raw" {
			bad("Format", "%q must be \"qcow2\" or \"raw\"", d.Format)
		}
		if d.KeyFile != "" && ((d.Driver != DriverRBD && d.Format != "qcow2") || !filepath.IsAbs(d.KeyFile)) {
			bad("KeyFile", "encryption needs a qcow2 disk and an absolute key file path (format %q, key file %q)", d.Format, d.KeyFile)
		}
		switch d.Bus {
		case BusVirtio, BusSATA:
			if d.CDROM || d.Bus == BusSATA {
				ahci++
			}
		case BusSCSI:
		default:
			bad("Bus", "unknown bus %q (want virtio, scsi or sata)", d.Bus)
		}
		if d.Bus == BusSATA && d.ReadOnly && !d.CDROM {
			// QEMU's ide-hd refuses read-only block nodes.
			bad("ReadOnly", "SATA disks cannot be read-only; use virtio or scsi")
		}
		if d.BootIndex < 0 {
			bad("BootIndex", "%d must not be negative", d.BootIndex)
		} else if d.BootIndex > 0 {
			if other, dup := boot[d.BootIndex]; dup {
				bad("BootIndex", "%d is also used by disk %q", d.BootIndex, other)
			}
			boot[d.BootIndex] = d.ID
		}
	}
	if ahci > sataPorts {
		errs = append(errs, fmt.Errorf("Disks: %d SATA disks and CD-ROMs, the AHCI controller has %d ports", ahci, sataPorts))
	}
	return errs
}

func (c *Config) validateNICs() []error {
	var errs []error
	ids := map[string]bool{}
	for i, n := range c.NICs {
		field := fmt.Sprintf("NICs[%d]", i)
		bad := func(sub, format string, args ...any) {
			errs = append(errs, fmt.Errorf("%s.%s: %s", field, sub, fmt.Sprintf(format, args...)))
		}
		switch {
		case !idPattern.MatchString(n.ID) || len(n.ID) > maxIDLen:
			bad("ID", "%q must be 1-%d characters of [a-z0-9-]", n.ID, maxIDLen)
		case ids[n.ID]:
			bad("ID", "duplicate NIC id %q", n.ID)
		}
		ids[n.ID] = true
		if !tapPattern.MatchString(n.Tap) {
			bad("Tap", "%q is not a valid interface name", n.Tap)
		}
		if !macPattern.MatchString(n.MAC) {
			bad("MAC", "%q is not a MAC address like 52:54:00:12:34:56", n.MAC)
		} else if b := n.MAC[1]; strings.ContainsRune("13579bBdDfF", rune(b)) {
			bad("MAC", "%q is a multicast address", n.MAC)
		}
		if n.Model != "virtio" && n.Model != "e1000e" {
			bad("Model", "%q must be \"virtio\" or \"e1000e\"", n.Model)
		}
	}
	return errs
}
