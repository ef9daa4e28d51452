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
