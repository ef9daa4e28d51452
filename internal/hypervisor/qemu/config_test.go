package qemu

import (
	"strings"
	"testing"
)

func validConfig() Config {
	return Config{
		Name: "tenant-a_vm1", UUID: testUUID, CPUs: 1, MemoryMiB: 256, RunDir: "/run/kumo/vm1",
		Disks: []Disk{{ID: "root", Path: "/d/root.qcow2", Format: "qcow2", Bus: BusVirtio, BootIndex: 1}},
		NICs:  []NIC{{ID: "eth0", Tap: "kt-1", MAC: "52:54:00:00:00:01"}},
	}
}

func TestValidateAcceptsValidConfig(t *testing.T) {
	cfg := validConfig()
	if err := cfg.Validate(); err != nil {
		t.Fatalf("Validate: %v", err)
	}
}

func TestValidateNamesTheBadField(t *testing.T) {
	for _, tc := range []struct {
		name   string
		modify func(*Config)
		want   string
	}{
		{"no CPUs", func(c *Config) { c.CPUs = 0 }, "CPUs: 0 must be between"},
		{"too little memory", func(c *Config) { c.MemoryMiB = 1 }, "MemoryMiB"},
		{"no name", func(c *Config) { c.Name = "" }, "Name"},
		{"comma in name", func(c *Config) { c.Name = "a,b" }, "Name"},
		{"bad uuid", func(c *Config) { c.UUID = "nope" }, "UUID"},
		{"unknown accel", func(c *Config) { c.Accel = "hvf" }, "Accel"},
		{"unknown machine", func(c *Config) { c.Machine = "virt" }, "Machine"},
		{"unknown firmware", func(c *Config) { c.Firmware = "coreboot" }, "Firmware"},
		{"unknown clock", func(c *Config) { c.Clock = "gmt" }, "Clock"},
		{"relative run dir", func(c *Config) { c.RunDir = "run/vm1" }, "RunDir"},
		{"missing run dir", func(c *Config) { c.RunDir = "" }, "RunDir: is required"},
		{"run dir too long for sockets", func(c *Config) { c.RunDir = "/" + strings.Repeat("x", 100) }, "RunDir"},
		{"unknown bus", func(c *Config) { c.Disks[0].Bus = "nvme" }, `Disks[0].Bus: unknown bus "nvme"`},
		{"duplicate disk ids", func(c *Config) {
			c.Disks = append(c.Disks, Disk{ID: "root", Path: "/d/2", Format: "raw", Bus: BusVirtio})
		}, `Disks[1].ID: duplicate disk id "root"`},
		{"bad disk id", func(c *Config) { c.Disks[0].ID = "Root_1" }, "Disks[0].ID"},
		{"missing format", func(c *Config) { c.Disks[0].Format = "" }, "Disks[0].Format"},
		{"unknown format", func(c *Config) { c.Disks[0].Format = "vmdk" }, "Disks[0].Format"},
		{"relative disk path", func(c *Config) { c.Disks[0].Path = "root.qcow2" }, "Disks[0].Path"},
		{"rbd without its image", func(c *Config) { c.Disks[0].Driver = DriverRBD }, "Disks[0].RBD"},
		{"encrypted rbd not raw", func(c *Config) {
			c.Disks[0].Driver, c.Disks[0].Format, c.Disks[0].KeyFile = DriverRBD, "qcow2", "/k"
			c.Disks[0].RBD = &RBDImage{Pool: "p", Image: "i", Conf: "/c"}
		}, "Disks[0].Format"},
		{"unknown driver", func(c *Config) { c.Disks[0].Driver = "nbd" }, "Disks[0].Driver"},
		{"negative boot index", func(c *Config) { c.Disks[0].BootIndex = -1 }, "Disks[0].BootIndex"},
		{"duplicate boot index", func(c *Config) {
			c.Disks = append(c.Disks, Disk{ID: "cd", Path: "/i.iso", Bus: BusSATA, CDROM: true, BootIndex: 1})
		}, `Disks[1].BootIndex: 1 is also used by disk "root"`},
		{"read-only sata disk", func(c *Config) { c.Disks[0].Bus = BusSATA; c.Disks[0].ReadOnly = true }, "Disks[0].ReadOnly"},
		{"too many sata devices", func(c *Config) {
			for _, id := range []string{"a", "b", "c", "d", "e", "f", "g"} {
				c.Disks = append(c.Disks, Disk{ID: id, Path: "/d/" + id, Format: "raw", Bus: BusSATA})
			}
		}, "AHCI controller has 6 ports"},
		{"duplicate nic ids", func(c *Config) { c.NICs = append(c.NICs, c.NICs[0]) }, `NICs[1].ID: duplicate`},
		{"bad mac", func(c *Config) { c.NICs[0].MAC = "52:54:00:00:00" }, "NICs[0].MAC"},
		{"multicast mac", func(c *Config) { c.NICs[0].MAC = "01:00:5e:00:00:01" }, "multicast"},
		{"tap name too long", func(c *Config) { c.NICs[0].Tap = "kumo-tap-much-too-long" }, "NICs[0].Tap"},
		{"unknown nic model", func(c *Config) { c.NICs[0].Model = "rtl8139" }, "NICs[0].Model"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := validConfig()
			tc.modify(&cfg)
			err := cfg.Validate()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Validate = %v, want an error containing %q", err, tc.want)
			}
			if _, argsErr := cfg.Args(); argsErr == nil {
				t.Fatalf("Args accepted a config Validate rejects")
			}
		})
	}
}

func TestValidateReportsEveryProblem(t *testing.T) {
	cfg := validConfig()
	cfg.CPUs = 0
	cfg.Disks[0].Bus = "floppy"
	err := cfg.Validate()
	if err == nil || !strings.Contains(err.Error(), "CPUs") || !strings.Contains(err.Error(), "Disks[0].Bus") {
		t.Fatalf("Validate = %v, want both CPUs and Disks[0].Bus reported", err)
	}
}

func TestValidateDoesNotModifyConfig(t *testing.T) {
	cfg := validConfig()
	cfg.Disks = append(cfg.Disks, Disk{ID: "cd", Path: "/i.iso", Bus: BusSATA, CDROM: true})
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	if cfg.Binary != "" || cfg.Disks[1].Format != "" || cfg.Disks[1].ReadOnly {
		t.Fatalf("Validate changed the caller's config: %+v", cfg)
	}
}

func TestSocketPathsLiveInRunDir(t *testing.T) {
	cfg := Config{RunDir: "/run/kumo/vm1"}
	for got, want := range map[string]string{
		cfg.QMPSocket():    "/run/kumo/vm1/qmp.sock",
		cfg.SerialSocket(): "/run/kumo/vm1/serial.sock",
		cfg.VNCSocket():    "/run/kumo/vm1/vnc.sock",
		cfg.PIDFile():      "/run/kumo/vm1/qemu.pid",
		cfg.LogFile():      "/run/kumo/vm1/qemu.log",
	} {
		if got != want {
			t.Errorf("got %q, want %q", got, want)
		}
	}
}
