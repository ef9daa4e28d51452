package qemu

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
)

// Fixed QEMU object ids.
const (
	serialChardevID  = "serial0"
	scsiControllerID = "scsi0"
	usbControllerID  = "usb0"
	// pcAHCIID names the AHCI controller added to "pc" machines; q35 has one built in, called "ide".
	pcAHCIID     = "sata0"
	q35AHCIID    = "ide"
	pflashCodeID = "pflash0"
	pflashVarsID = "pflash1"
)

// tcgCPUModel is used under TCG: "host" needs KVM, and a fixed model keeps guests migratable.
const tcgCPUModel = "qemu64"

// hypervEnlightenments are the Hyper-V features offered to Windows guests under KVM.
var hypervEnlightenments = []string{"hv-relaxed", "hv-vapic", "hv-spinlocks=0x1fff", "hv-time"}

// Args returns QEMU's full argv without the binary, in a deterministic order. It validates the
// configuration first. For UEFI it names the VM's variable-store copy in RunDir; Start creates it.
func (c *Config) Args() ([]string, error) {
	cfg := c.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("invalid config for VM %q: %w", c.Name, err)
	}
	a := &argv{}

	machine := cfg.Machine
	if cfg.Firmware == FirmwareUEFI {
		machine += ",pflash0=" + pflashCodeID + ",pflash1=" + pflashVarsID
	}
	if cfg.SecureBoot {
		// OVMF's Secure Boot build keeps its variables safe from the guest OS in SMM.
		machine += ",smm=on"
	}
	a.add("-name", "guest="+cfg.Name+",debug-threads=on")
	a.add("-uuid", cfg.UUID)
	a.add("-machine", machine)
	a.add("-accel", cfg.Accel)
	a.add("-cpu", cfg.cpuModel())
	a.add("-smp", fmt.Sprintf("%d,sockets=%d,cores=%d,threads=1", cfg.CPUs, cfg.Sockets, cfg.CPUs/cfg.Sockets))
	a.add("-m", strconv.FormatInt(cfg.MemoryMiB, 10))
	a.add("-nodefaults", "-no-user-config", "-no-shutdown")
	a.add("-msg", "timestamp=on")
	a.add("-display", "none")
	a.add("-rtc", "base="+cfg.Clock)
	a.add("-vga", "std")
	a.add("-vnc", "unix:"+escapeOpt(cfg.VNCSocket()))
	a.add("-chardev", "socket,id="+serialChardevID+",path="+escapeOpt(cfg.SerialSocket())+",server=on,wait=off")
	a.add("-serial", "chardev:"+serialChardevID)
	a.add("-qmp", qmpArg(cfg.QMPSocket()))
	a.add("-pidfile", cfg.PIDFile())
	// pvpanic turns a guest kernel panic into the QMP status "guest-panicked".
	a.add("-device", "pvpanic")

	if cfg.SecureBoot {
		// Only SMM code may write the variable flash: the guest cannot tamper with the keys.
		a.add("-global", "driver=cfi.pflash01,property=secure,value=on")
	}
	if cfg.Firmware == FirmwareUEFI {
		code, _, err := uefiFirmware(cfg.SecureBoot)
		if err != nil {
			return nil, err
		}
		a.blockdev(blockdevFile{Driver: DriverFile, NodeName: pflashCodeID, Filename: code, ReadOnly: true})
		a.blockdev(blockdevFile{Driver: DriverFile, NodeName: pflashVarsID, Filename: cfg.UEFIVarsFile()})
	}
	if cfg.Tablet {
		a.add("-device", "qemu-xhci,id="+usbControllerID)
		a.add("-device", "usb-tablet,id=tablet0,bus="+usbControllerID+".0")
	}
	cfg.diskArgs(a)
	for _, n := range cfg.NICs {
		model := "virtio-net-pci"
		if n.Model == "e1000e" {
			model = "e1000e"
		}
		a.add("-netdev", "tap,id=net-"+n.ID+",ifname="+n.Tap+",script=no,downscript=no")
		a.add("-device", model+",id=nic-"+n.ID+",netdev=net-"+n.ID+",mac="+strings.ToLower(n.MAC))
	}
	if a.err != nil {
		return nil, fmt.Errorf("build arguments for VM %q: %w", c.Name, a.err)
	}
	return a.args, nil
}

func (c *Config) cpuModel() string {
	model := c.CPUModel
	switch {
	case model != "":
	case c.Accel != AccelKVM:
		model = tcgCPUModel
	default:
		model = "host"
	}
	if c.HyperV && c.Accel == AccelKVM {
		return model + "," + strings.Join(hypervEnlightenments, ",")
	}
	return model
}

// diskArgs adds the storage controllers the disks need, then one pair of block nodes (protocol
// and format) and one device per disk, in the order of Config.Disks.
func (c *Config) diskArgs(a *argv) {
	needSCSI, needAHCI := false, false
	for _, d := range c.Disks {
		switch {
		case d.Bus == BusSCSI:
			needSCSI = true
		case d.Bus == BusSATA || d.CDROM:
			needAHCI = true
		}
	}
	if needSCSI {
		a.add("-device", "virtio-scsi-pci,id="+scsiControllerID)
	}
	ahci := q35AHCIID
	if c.Machine == "pc" {
		ahci = pcAHCIID
		if needAHCI {
			a.add("-device", "ich9-ahci,id="+pcAHCIID)
		}
	}

	sataPort, scsiID := 0, 0
	for _, d := range c.Disks {
		file, drive := "file-"+d.ID, DiskNode(d.ID)
		secret := "sec-" + d.ID
		if d.KeyFile != "" {
			a.add("-object", "secret,id="+secret+",file="+escapeOpt(d.KeyFile))
		}
		format := blockdevFormat{Driver: d.Format, NodeName: drive, File: file, ReadOnly: d.ReadOnly}
		if d.Driver == DriverRBD {
			// librbd decrypts LUKS2 itself: the raw format node sees plaintext.
			rbd := blockdevRBD{Driver: DriverRBD, NodeName: file, Pool: d.RBD.Pool, Namespace: d.RBD.Namespace, Image: d.RBD.Image,
				Conf: d.RBD.Conf, User: d.RBD.User, ReadOnly: d.ReadOnly}
			if d.KeyFile != "" {
				rbd.Encrypt = &blockdevEncrypt{Format: "luks2", KeySecret: secret}
			}
			a.blockdev(rbd)
		} else {
			a.blockdev(blockdevFile{Driver: d.Driver, NodeName: file, Filename: d.Path, ReadOnly: d.ReadOnly})
			if d.KeyFile != "" {
				format.Encrypt = &blockdevEncrypt{Format: "luks", KeySecret: secret}
			}
		}
		a.blockdev(format)

		var dev string
		switch {
		case d.Bus == BusSCSI:
			kind := "scsi-hd"
			if d.CDROM {
				kind = "scsi-cd"
			}
			dev = fmt.Sprintf("%s,bus=%s.0,channel=0,scsi-id=%d,lun=0", kind, scsiControllerID, scsiID)
			scsiID++
		case d.Bus == BusSATA || d.CDROM:
			kind := "ide-hd"
			if d.CDROM {
				kind = "ide-cd"
			}
			dev = fmt.Sprintf("%s,bus=%s.%d", kind, ahci, sataPort)
			sataPort++
		default:
			dev = "virtio-blk-pci"
		}
		dev += ",id=disk-" + d.ID + ",drive=" + drive
		if d.BootIndex > 0 {
			dev += ",bootindex=" + strconv.Itoa(d.BootIndex)
		}
		a.add("-device", dev)
	}
}

// blockdevFile is a protocol node opening a file.
type blockdevFile struct {
	Driver   string `json:"driver"`
	NodeName string `json:"node-name"`
	Filename string `json:"filename"`
	ReadOnly bool   `json:"read-only"`
}

// blockdevFormat is a format node (qcow2, raw) on top of a protocol node.
type blockdevFormat struct {
	Driver   string           `json:"driver"`
	NodeName string           `json:"node-name"`
	File     string           `json:"file"`
	ReadOnly bool             `json:"read-only"`
	Encrypt  *blockdevEncrypt `json:"encrypt,omitempty"`
}

// blockdevRBD is a protocol node opening a Ceph RBD image with QEMU's librbd driver.
type blockdevRBD struct {
	Driver    string           `json:"driver"`
	NodeName  string           `json:"node-name"`
	Pool      string           `json:"pool"`
	Namespace string           `json:"namespace,omitempty"`
	Image     string           `json:"image"`
	Conf      string           `json:"conf"`
	User      string           `json:"user,omitempty"`
	ReadOnly  bool             `json:"read-only"`
	Encrypt   *blockdevEncrypt `json:"encrypt,omitempty"`
}

// blockdevEncrypt opens a qcow2 image's LUKS encryption with a secret object.
type blockdevEncrypt struct {
	Format    string `json:"format"`
	KeySecret string `json:"key-secret"`
}

// argv accumulates arguments; the first error sticks.
type argv struct {
	args []string
	err  error
}

func (a *argv) add(args ...string) { a.args = append(a.args, args...) }

// blockdev adds a -blockdev in JSON form: no comma escaping, and room for nested options (rbd).
func (a *argv) blockdev(v any) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		if a.err == nil {
			a.err = fmt.Errorf("encode -blockdev %+v: %w", v, err)
		}
		return
	}
	a.add("-blockdev", strings.TrimSuffix(buf.String(), "\n"))
}

// escapeOpt escapes a value inside QEMU's key=value,... option syntax.
func escapeOpt(s string) string { return strings.ReplaceAll(s, ",", ",,") }

// qmpArg is the -qmp value for a socket; Attach looks for it in a process's command line.
func qmpArg(socket string) string { return "unix:" + escapeOpt(socket) + ",server=on,wait=off" }
