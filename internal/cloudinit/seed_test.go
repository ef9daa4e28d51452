package cloudinit

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

const (
	keyA = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEW9EZop09oHzq6ighAgSvvAaTfMsccV0rbSEFe0KTqn a@kumo"
	keyB = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKQb0T2k4hK5w3vYy7R8E2b2Qm0dQ6Lr1HnmcN6f4pXz b@kumo"
)

func TestInstanceIDChangesWithTheSeedOnly(t *testing.T) {
	a := InstanceID("tenant-a", "vm", "")
	if a != InstanceID("tenant-a", "vm", "") {
		t.Error("instance-id is not stable")
	}
	if a == InstanceID("tenant-a", "vm", "2") || a == InstanceID("tenant-b", "vm", "") || a == InstanceID("tenant-a", "vm2", "") {
		t.Error("instance-id does not depend on namespace, name and seed")
	}
}

func TestUserDataMergesKeysIntoCloudConfig(t *testing.T) {
	s := Seed{UserData: "#cloud-config\npackages: [htop]\nssh_authorized_keys:\n  - " + keyA + "\n", SSHKeys: []string{keyA, keyB}}
	ud, err := s.UserDataBytes()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(ud), "#cloud-config\n") {
		t.Fatalf("header lost:\n%s", ud)
	}
	var doc struct {
		Packages []string `json:"packages"`
		Keys     []string `json:"ssh_authorized_keys"`
	}
	if err := yaml.Unmarshal(ud, &doc); err != nil {
		t.Fatal(err)
	}
	if len(doc.Packages) != 1 || len(doc.Keys) != 2 || doc.Keys[0] != keyA || doc.Keys[1] != keyB {
		t.Errorf("merged user-data: %+v\n%s", doc, ud)
	}
}

func TestEmptyUserDataGivesMinimalCloudConfig(t *testing.T) {
	ud, err := Seed{}.UserDataBytes()
	if err != nil || string(ud) != "#cloud-config\n" {
		t.Errorf("got %q, %v", ud, err)
	}
	ud, _ = Seed{SSHKeys: []string{keyA}}.UserDataBytes()
	if !strings.Contains(string(ud), "ssh_authorized_keys:\n  - "+keyA+"\n") {
		t.Errorf("keys missing:\n%s", ud)
	}
}

func TestScriptUserDataIsWrappedInMultipart(t *testing.T) {
	ud, err := Seed{UserData: "#!/bin/sh\necho hi\n", SSHKeys: []string{keyA}}.UserDataBytes()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"Content-Type: multipart/mixed", "text/cloud-config", keyA, "text/x-shellscript", "echo hi"} {
		if !strings.Contains(string(ud), want) {
			t.Errorf("multipart lacks %q:\n%s", want, ud)
		}
	}
	if ud, _ := (Seed{UserData: "#!/bin/sh\n"}).UserDataBytes(); string(ud) != "#!/bin/sh\n" {
		t.Errorf("a script without keys must pass unchanged, got %q", ud)
	}
}

// requireISOTools fails (skips only with -short) when the tools to write and read an ISO are
// missing: hack/install-deps.sh installs both with genisoimage.
func requireISOTools(t *testing.T) {
	t.Helper()
	for _, tool := range []string{"genisoimage", "isoinfo"} {
		if _, err := exec.LookPath(tool); err != nil {
			if testing.Short() {
				t.Skipf("%s not installed; skipped with -short", tool)
			}
			t.Fatalf("%s not installed (apt-get install genisoimage, or hack/install-deps.sh): %v", tool, err)
		}
	}
}

func TestWriteISOLabelsTheVolumeCidata(t *testing.T) {
	requireISOTools(t)
	path := filepath.Join(t.TempDir(), "seed.iso")
	s := Seed{InstanceID: "kumo-1", Hostname: "vm1", SSHKeys: []string{keyA}}
	if err := s.WriteISO(path); err != nil {
		t.Fatal(err)
	}
	// The ISO was just built: a reader that cannot read it means a broken seed, not a missing tool.
	out, err := exec.Command("isoinfo", "-d", "-i", path).CombinedOutput()
	if err != nil {
		t.Fatalf("isoinfo -d -i %s on the seed just written: %v\n%s", path, err, out)
	}
	if !strings.Contains(string(out), "Volume id: cidata") {
		t.Errorf("volume label:\n%s", out)
	}
	files, err := exec.Command("isoinfo", "-R", "-i", path, "-x", "/meta-data").Output()
	if err != nil {
		t.Fatalf("isoinfo -x /meta-data from %s: %v", path, err)
	}
	if string(files) != string(s.MetaData()) {
		t.Errorf("meta-data in ISO %q", files)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("seed mode %o", st.Mode().Perm())
	}
}

func TestNetplanDHCPAddsNetworkConfigForEveryInterface(t *testing.T) {
	requireISOTools(t)
	dir := t.TempDir()
	without := Seed{InstanceID: "kumo-1", Hostname: "vm1"}
	if err := without.WriteISO(filepath.Join(dir, "plain.iso")); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("isoinfo", "-R", "-f", "-i", filepath.Join(dir, "plain.iso")).Output(); err != nil || strings.Contains(string(out), "network-config") {
		t.Errorf("a seed without netplanDhcp lists %q (%v)", out, err)
	}
	with := Seed{InstanceID: "kumo-1", Hostname: "vm1", DHCPAllInterfaces: true}
	path := filepath.Join(dir, "dhcp.iso")
	if err := with.WriteISO(path); err != nil {
		t.Fatal(err)
	}
	data, err := exec.Command("isoinfo", "-R", "-i", path, "-x", "/network-config").Output()
	if err != nil {
		t.Fatalf("isoinfo -x /network-config: %v", err)
	}
	var nc struct {
		Version   int `json:"version"`
		Ethernets map[string]struct {
			Match struct {
				Name string `json:"name"`
			} `json:"match"`
			DHCP4 bool `json:"dhcp4"`
			DHCP6 bool `json:"dhcp6"`
		} `json:"ethernets"`
	}
	if err := yaml.UnmarshalStrict(data, &nc); err != nil {
		t.Fatalf("network-config is not the expected YAML: %v\n%s", err, data)
	}
	names := map[string]bool{}
	for _, e := range nc.Ethernets {
		if e.DHCP4 {
			names[e.Match.Name] = true
		}
	}
	if nc.Version != 2 || !names["en*"] || !names["eth*"] {
		t.Errorf("network-config %+v: want version 2 with DHCP on en* and eth*", nc)
	}
}
