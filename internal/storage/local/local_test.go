package local

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	apps "kumo.dev/kumo/pkg/apis/apps/v1alpha1"
)

func disk(name, size string, src apps.VMDiskSource) *apps.VMDisk {
	q := resource.MustParse(size)
	return &apps.VMDisk{ObjectMeta: metav1.ObjectMeta{Namespace: "tenant-a", Name: name},
		Spec: apps.VMDiskSpec{Source: src, Storage: &q, StorageClass: apps.StorageLocal}}
}

func TestEnsureMakesOverlaysAndBlankDisks(t *testing.T) {
	if _, err := exec.LookPath("qemu-img"); err != nil {
		t.Skip("qemu-img not installed")
	}
	ctx := context.Background()
	d := &Driver{Dir: t.TempDir(), ImagesDir: t.TempDir()}
	if out, err := exec.Command("qemu-img", "create", "-q", "-f", "qcow2", d.ImagePath("tiny"), "64M").CombinedOutput(); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	if imgs := d.Images(); len(imgs) != 1 || imgs[0] != "tiny" {
		t.Errorf("Images() = %v", imgs)
	}
	v, err := d.Ensure(ctx, disk("sys", "1Gi", apps.VMDiskSource{Image: &apps.ImageSource{Name: "tiny"}}))
	if err != nil {
		t.Fatal(err)
	}
	if v.SizeBytes != 1<<30 || v.Format != "qcow2" {
		t.Errorf("volume %+v", v)
	}
	info, _ := exec.Command("qemu-img", "info", "-U", v.Path).Output()
	if !strings.Contains(string(info), "backing file: "+d.ImagePath("tiny")) {
		t.Errorf("not an overlay of the golden image:\n%s", info)
	}
	if st, _ := os.Stat(v.Path); st.Mode().Perm() != 0o600 {
		t.Errorf("disk mode %o", st.Mode().Perm())
	}
	again, err := d.Ensure(ctx, disk("sys", "1Gi", apps.VMDiskSource{Image: &apps.ImageSource{Name: "tiny"}}))
	if err != nil || again.Path != v.Path {
		t.Errorf("Ensure is not idempotent: %+v %v", again, err)
	}
	if _, err := d.Ensure(ctx, disk("blank", "2Gi", apps.VMDiskSource{})); err != nil {
		t.Errorf("blank disk: %v", err)
	}
	if got := d.Disks(); len(got) != 2 {
		t.Errorf("Disks() = %v", got)
	}
	_, err = d.Ensure(ctx, disk("small", "32Mi", apps.VMDiskSource{Image: &apps.ImageSource{Name: "tiny"}}))
	if err == nil || !strings.Contains(err.Error(), "larger than spec.storage 32Mi") {
		t.Errorf("image larger than the disk: %v", err)
	}
	_, err = d.Ensure(ctx, disk("nope", "1Gi", apps.VMDiskSource{Image: &apps.ImageSource{Name: "missing"}}))
	if err == nil || !strings.Contains(err.Error(), "golden image missing is not on this node") {
		t.Errorf("missing image: %v", err)
	}
	if err := d.Delete(ctx, "tenant-a", "sys"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(v.Path); !os.IsNotExist(err) {
		t.Errorf("disk still there after Delete: %v", err)
	}
	if err := d.Delete(ctx, "tenant-a", "sys"); err != nil {
		t.Errorf("deleting twice: %v", err)
	}
}
