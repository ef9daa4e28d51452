package e2e

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	kumo "kumo.dev/kumo/pkg/apis/kumo/v1alpha1"
)

func TestGoldenImageImportedOnceServesEveryTenant(t *testing.T) {
	c := startAllInOne(t, "--cpus", "4")
	// The agent caches golden images next to the ones make images built; use a private copy.
	out := c.MustKumo(t, c.AdminKubeconfig(), "image", "import", "tiny-copy", "--os", "linux", "--file", filepath.Join(imagesDir(), "kumo-tiny.qcow2"))
	if !strings.Contains(out, "uploaded a qcow2 image") {
		t.Fatalf("kumo image import: %s", out)
	}
	t.Cleanup(func() { removeImage("tiny-copy") })
	kc := c.NewTenant(t, "golden")
	eventually(t, time.Minute, "the image to be listed Ready", func() bool {
		l := c.MustKumo(t, kc, "image", "list")
		return strings.Contains(l, "tiny-copy") && strings.Contains(l, "Ready")
	})
	if r := c.Kumo(kc, "image", "import", "mine", "--url", "http://127.0.0.1:1/x.qcow2"); r.Err == nil || !strings.Contains(r.Stderr, "forbidden") {
		t.Errorf("a tenant imported a golden image: %s", r)
	}
	if r := Run(kc, strings.Replace(tinyVM("gvm", "gdisk", ""), "kumo-tiny", "tiny-copy", 1), bins.kumo, "apply", "-f", "-"); r.Err != nil {
		t.Fatal(r)
	}
	waitVM(t, c.Client(t, kc), kumo.TenantNamespace("golden"), "gvm", "Running", 3*time.Minute, running)
	eventually(t, 3*time.Minute, "the guest's marker", func() bool {
		return strings.Contains(c.MustKumo(t, kc, "console", "gvm", "--show-log"), "KUMO-GUEST-READY hostname=gvm")
	})
}
