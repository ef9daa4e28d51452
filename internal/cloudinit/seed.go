// Package cloudinit builds a VM's NoCloud seed: an ISO9660 volume labelled "cidata" holding
// meta-data (instance-id, local-hostname), user-data (the VM's cloudInit with its sshKeys
// merged in) and, when asked, network-config. The content is ours; genisoimage writes the ISO.
package cloudinit

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"mime/multipart"
	"net/textproto"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Seed is what goes into the NoCloud volume.
type Seed struct {
	// InstanceID changes when cloud-init should run again.
	InstanceID string
	Hostname   string
	// UserData is the VM's cloudInit; empty gives a minimal #cloud-config.
	UserData string
	SSHKeys  []string
	// DHCPAllInterfaces adds a network-config (version 2) asking DHCP on every en* and eth*
	// interface (the VM's netplanDhcp).
	DHCPAllInterfaces bool
}

// dhcpNetworkConfig is the network-config of netplanDhcp: DHCPv4 and v6 on every interface whose
// name starts with en (predictable names) or eth (kernel names).
const dhcpNetworkConfig = `version: 2
ethernets:
  kumo-en:
    match:
      name: "en*"
    dhcp4: true
    dhcp6: true
  kumo-eth:
    match:
      name: "eth*"
    dhcp4: true
    dhcp6: true
`

// NetworkConfig renders network-config, or nil when the seed has none.
func (s Seed) NetworkConfig() []byte {
	if !s.DHCPAllInterfaces {
		return nil
	}
	return []byte(dhcpNetworkConfig)
}

// isoTimeout bounds genisoimage, which writes a few kilobytes.
const isoTimeout = 30 * time.Second

// InstanceID derives the instance-id from the VM's identity and its cloudInitSeed: changing the
// seed changes the id, so cloud-init runs again.
func InstanceID(namespace, name, seed string) string {
	sum := sha256.Sum256([]byte(namespace + "/" + name + "/" + seed))
	return "kumo-" + hex.EncodeToString(sum[:8])
}

// MetaData renders meta-data.
func (s Seed) MetaData() []byte {
	return []byte(fmt.Sprintf("instance-id: %s\nlocal-hostname: %s\n", s.InstanceID, s.Hostname))
}

// UserDataBytes renders user-data: a #cloud-config gets the SSH keys merged into its top-level
// ssh_authorized_keys; any other format (scripts, #include, MIME) is wrapped in a MIME multipart
// together with a #cloud-config part carrying the keys.
func (s Seed) UserDataBytes() ([]byte, error) {
	ud := s.UserData
	if strings.TrimSpace(ud) == "" {
		ud = "#cloud-config\n"
	}
	if strings.HasPrefix(ud, "#cloud-config") && !strings.HasPrefix(ud, "#cloud-config-") {
		return mergeKeys(ud, s.SSHKeys)
	}
	if len(s.SSHKeys) == 0 {
		return []byte(ud), nil
	}
	keys, err := mergeKeys("#cloud-config\n", s.SSHKeys)
	if err != nil {
		return nil, err
	}
	return multipartUserData(keys, []byte(ud))
}

func mergeKeys(cloudConfig string, keys []string) ([]byte, error) {
	doc := map[string]interface{}{}
	if err := yaml.Unmarshal([]byte(cloudConfig), &doc); err != nil {
		return nil, fmt.Errorf("cloudInit is not valid YAML: %w", err)
	}
	if doc == nil {
		doc = map[string]interface{}{}
	}
	var merged []interface{}
	seen := map[string]bool{}
	if existing, ok := doc["ssh_authorized_keys"].([]interface{}); ok {
		for _, k := range existing {
			if ks, ok := k.(string); ok && !seen[strings.TrimSpace(ks)] {
				seen[strings.TrimSpace(ks)] = true
				merged = append(merged, strings.TrimSpace(ks))
			}
		}
	}
	for _, k := range keys {
		if k = strings.TrimSpace(k); k != "" && !seen[k] {
			seen[k] = true
			merged = append(merged, k)
		}
	}
	if len(merged) > 0 {
		doc["ssh_authorized_keys"] = merged
	}
	var body bytes.Buffer
	body.WriteString("#cloud-config\n")
	if len(doc) > 0 {
		enc := yaml.NewEncoder(&body)
		enc.SetIndent(2)
		if err := enc.Encode(doc); err != nil {
			return nil, err
		}
		if err := enc.Close(); err != nil {
			return nil, err
		}
	}
	return body.Bytes(), nil
}

// partTypes maps user-data headers to MIME types cloud-init understands.
var partTypes = []struct{ prefix, mime string }{
	{"#!", "text/x-shellscript"}, {"#include", "text/x-include-url"}, {"#cloud-boothook", "text/cloud-boothook"},
	{"#part-handler", "text/part-handler"}, {"#cloud-config-archive", "text/cloud-config-archive"},
	{"#cloud-config-jsonp", "text/cloud-config-jsonp"}, {"## template: jinja", "text/jinja2"},
}

func multipartUserData(cloudConfig, other []byte) ([]byte, error) {
	if bytes.HasPrefix(other, []byte("Content-Type: multipart/")) {
		return nil, fmt.Errorf("a MIME multipart cloudInit cannot be combined with sshKeys: put the keys into the cloud-config part")
	}
	mimeType := "text/plain"
	for _, p := range partTypes {
		if bytes.HasPrefix(other, []byte(p.prefix)) {
			mimeType = p.mime
			break
		}
	}
	var buf bytes.Buffer
	w := multipart.NewWriter(&buf)
	fmt.Fprintf(&buf, "Content-Type: multipart/mixed; boundary=%q\nMIME-Version: 1.0\n\n", w.Boundary())
	for _, part := range []struct {
		mime string
		body []byte
	}{{"text/cloud-config", cloudConfig}, {mimeType, other}} {
		pw, err := w.CreatePart(textproto.MIMEHeader{"Content-Type": {part.mime + `; charset="us-ascii"`}})
		if err != nil {
			return nil, err
		}
		if _, err := pw.Write(part.body); err != nil {
			return nil, err
		}
	}
	if err := w.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// WriteISO writes the seed as an ISO9660 volume labelled cidata at path (mode 0600).
func (s Seed) WriteISO(path string) error {
	ud, err := s.UserDataBytes()
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp(filepath.Dir(path), ".cidata-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	files := map[string][]byte{"meta-data": s.MetaData(), "user-data": ud}
	if nc := s.NetworkConfig(); nc != nil {
		files["network-config"] = nc
	}
	args := []string{"-quiet", "-output", path + ".tmp", "-volid", "cidata", "-joliet", "-rock"}
	for _, name := range []string{"user-data", "meta-data", "network-config"} {
		data, ok := files[name]
		if !ok {
			continue
		}
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			return err
		}
		args = append(args, filepath.Join(dir, name))
	}
	tmp := path + ".tmp"
	ctx, cancel := context.WithTimeout(context.Background(), isoTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, "genisoimage", args...).CombinedOutput()
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("genisoimage: %v: %s", err, strings.TrimSpace(string(out)))
	}
	if err := os.Chmod(tmp, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
