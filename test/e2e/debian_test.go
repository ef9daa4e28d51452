package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	kumo "kumo.dev/kumo/pkg/apis/kumo/v1alpha1"
)

// TestDebianCloudImageRunsCloudInit boots the real Debian 12 cloud image (make images-all) and
// checks that cloud-init applied Kumo's NoCloud seed: the hostname and the merged SSH key.
func TestDebianCloudImageRunsCloudInit(t *testing.T) {
	needCluster(t)
	if _, err := os.Stat(filepath.Join(imagesDir(), "debian-12.qcow2")); err != nil {
		t.Skip("debian-12 image not built (make images-all)")
	}
	c := startAllInOne(t, "--cpus", "4")
	kc := c.NewTenant(t, "deb")
	m := strings.ReplaceAll(tinyVM("deb1", "deb-sys", "  sshKeys:\n  - "+sshKey(t)+"\n  cloudInit: |\n    #cloud-config\n    runcmd:\n      - echo KUMO-RUNCMD-$(hostname) > /dev/ttyS0\n"), "kumo-tiny", "debian-12")
	m = strings.Replace(m, "storage: 1Gi", "storage: 3Gi", 1)
	m = strings.Replace(m, "instanceType: s1.small", "instanceType: s1.medium", 1)
	if r := Run(kc, m, bins.kumo, "apply", "-f", "-"); r.Err != nil {
		t.Fatal(r)
	}
	cl := c.Client(t, kc)
	waitVM(t, cl, kumo.TenantNamespace("deb"), "deb1", "Running", 2*time.Minute, running)
	var log string
	eventually(t, 5*time.Minute, "cloud-init to finish", func() bool {
		log = c.MustKumo(t, kc, "console", "deb1", "--show-log")
		return strings.Contains(log, "Cloud-init v.") && strings.Contains(log, "finished at")
	})
	if !strings.Contains(log, "KUMO-RUNCMD-deb1") {
		t.Errorf("cloud-init did not run the VM's runcmd with hostname deb1:\n%s", tail(log, 40))
	}
}

// TestDebianCloudKernelImageGetsItsSeed boots Debian 12 on Debian's cloud kernel
// (linux-image-cloud-amd64, no AHCI driver: make images-all builds debian-12-cloud) and checks
// that cloud-init found Kumo's NoCloud seed, now a virtio disk: the VM's hostname, its SSH key in
// the default user's authorized_keys and its runcmd. With the seed on q35's AHCI CD-ROM, cloud-init
// fell back to DataSourceNone and none of it happened.
func TestDebianCloudKernelImageGetsItsSeed(t *testing.T) {
	needCluster(t)
	if _, err := os.Stat(filepath.Join(imagesDir(), "debian-12-cloud.qcow2")); err != nil {
		t.Skip("debian-12-cloud image not built (make images-all)")
	}
	c := startAllInOne(t, "--cpus", "4")
	kc := c.NewTenant(t, "cloud")
	runcmd := "  sshKeys:\n  - " + sshKey(t) + "\n  cloudInit: |\n    #cloud-config\n    runcmd:\n" +
		"      - echo KUMO-RUNCMD-$(hostname)-keys-$(grep -c ssh-ed25519 /home/debian/.ssh/authorized_keys) > /dev/ttyS0\n"
	m := strings.ReplaceAll(tinyVM("cloud1", "cloud-sys", runcmd), "kumo-tiny", "debian-12-cloud")
	m = strings.Replace(m, "storage: 1Gi", "storage: 3Gi", 1)
	m = strings.Replace(m, "instanceType: s1.small", "instanceType: s1.medium", 1)
	if r := Run(kc, m, bins.kumo, "apply", "-f", "-"); r.Err != nil {
		t.Fatal(r)
	}
	cl := c.Client(t, kc)
	waitVM(t, cl, kumo.TenantNamespace("cloud"), "cloud1", "Running", 2*time.Minute, running)
	var log string
	eventually(t, 5*time.Minute, "cloud-init to finish", func() bool {
		log = c.MustKumo(t, kc, "console", "cloud1", "--show-log")
		return strings.Contains(log, "Cloud-init v.") && strings.Contains(log, "finished at")
	})
	if strings.Contains(log, "DataSourceNone") {
		t.Errorf("cloud-init fell back to DataSourceNone: the cloud kernel did not see the seed:\n%s", tail(log, 40))
	}
	if !strings.Contains(log, "KUMO-RUNCMD-cloud1-keys-1") {
		t.Errorf("cloud-init did not apply the seed (hostname cloud1, one SSH key, runcmd):\n%s", tail(log, 40))
	}
}
