package apiserver

import (
	"os"
	"path/filepath"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	apps "kumo.dev/kumo/pkg/apis/apps/v1alpha1"
	kumo "kumo.dev/kumo/pkg/apis/kumo/v1alpha1"
)

func TestOneUploadAtATimePerObject(t *testing.T) {
	u := &uploadREST{}
	if !u.begin("a") {
		t.Fatal("first upload refused")
	}
	if u.begin("a") {
		t.Fatal("a second upload to the same object while the first runs")
	}
	if !u.begin("b") {
		t.Fatal("an upload to another object must not wait")
	}
	u.end("a")
	if !u.begin("a") {
		t.Fatal("an upload after the first ended")
	}
}

func TestStagedFilesAreNamedByUIDAndGoWithTheirObject(t *testing.T) {
	dir := t.TempDir()
	u := &uploadREST{resource: apps.Resource("vmdisks"), dir: dir}
	d := &apps.VMDisk{ObjectMeta: metav1.ObjectMeta{Name: "d", Namespace: "tenant-a", UID: "uid-1"}}
	namesake := &apps.VMDisk{ObjectMeta: metav1.ObjectMeta{Name: "d", Namespace: "tenant-a", UID: "uid-2"}}
	path := u.stagedPath(d.Namespace, d.UID)
	if path != filepath.Join(dir, "vmdisks", "tenant-a", "uid-1.img") {
		t.Fatalf("staged path %s", path)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	other := u.stagedPath(namesake.Namespace, namesake.UID)
	for _, p := range []string{path, path + receivingSuffix, other} {
		if err := os.WriteFile(p, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	u.forget(d, nil)
	for _, p := range []string{path, path + receivingSuffix} {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Errorf("%s survives its disk: %v", p, err)
		}
	}
	if _, err := os.Stat(other); err != nil {
		t.Errorf("the upload of a namesake disk went with the deleted one: %v", err)
	}
	u.forget(d, nil) // already gone: nothing to do, nothing logged as an error
	if got := (&uploadREST{resource: apps.Resource("goldenimages"), dir: dir}).stagedPath("", "g"); got != filepath.Join(dir, "goldenimages", "_cluster", "g.img") {
		t.Errorf("cluster-scoped staged path %s", got)
	}
}

func TestRemoveReceivingCleansOnlyInterruptedUploads(t *testing.T) {
	dir := t.TempDir()
	keep := filepath.Join(dir, "vmdisks", "tenant-a", "uid-1.img")
	cut := filepath.Join(dir, "vmdisks", "tenant-b", "uid-2.img"+receivingSuffix)
	for _, p := range []string{keep, cut} {
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := removeReceiving(dir); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(cut); !os.IsNotExist(err) {
		t.Errorf("interrupted upload left: %v", err)
	}
	if _, err := os.Stat(keep); err != nil {
		t.Errorf("a staged upload was removed: %v", err)
	}
	if err := removeReceiving(filepath.Join(dir, "absent")); err != nil {
		t.Errorf("no uploads directory yet is no error: %v", err)
	}
}

// An upload replaces the staged file a node may be reading: once content was received it is
// the object's for good (a disk whose preparation failed excepted).
func TestUploadRefusedOnceContentWasReceived(t *testing.T) {
	disks := diskUploads(nil, nil, t.TempDir())
	uploaded := []metav1.Condition{{Type: ConditionUploaded, Status: metav1.ConditionTrue, Reason: "Uploaded"}}
	disk := func(phase apps.VMDiskPhase, conds []metav1.Condition) *apps.VMDisk {
		return &apps.VMDisk{Spec: apps.VMDiskSpec{Source: apps.VMDiskSource{Upload: &apps.UploadSource{}}},
			Status: apps.VMDiskStatus{Phase: phase, Conditions: conds}}
	}
	if err := disks.accepts(disk(apps.DiskPending, nil)); err != nil {
		t.Errorf("first upload refused: %v", err)
	}
	for _, phase := range []apps.VMDiskPhase{apps.DiskPending, apps.DiskImporting} {
		if err := disks.accepts(disk(phase, uploaded)); err == nil {
			t.Errorf("a second upload accepted while the disk is %s with its first one received", phase)
		}
	}
	if err := disks.accepts(disk(apps.DiskFailed, uploaded)); err != nil {
		t.Errorf("a failed disk must take a new upload: %v", err)
	}

	images := imageUploads(nil, t.TempDir())
	img := &kumo.GoldenImage{Spec: kumo.GoldenImageSpec{Source: kumo.GoldenImageSource{Upload: &kumo.GoldenImageUpload{}}}}
	if err := images.accepts(img); err != nil {
		t.Errorf("first image upload refused: %v", err)
	}
	img.Status.Phase = kumo.GoldenImageReady
	img.Status.Conditions = uploaded
	if err := images.accepts(img); err == nil {
		t.Error("new content accepted under a golden image's UID that nodes already cached")
	}
}

// Like the disk key, a tenant's uploaded content is handed to the node preparing the disk only.
func TestUploadedDiskIsReadByItsNodeOnly(t *testing.T) {
	disks := diskUploads(nil, nil, t.TempDir())
	d := &apps.VMDisk{Status: apps.VMDiskStatus{Node: "n1"}}
	if err := disks.nodeMayRead(d, "n1"); err != nil {
		t.Errorf("the disk's node: %v", err)
	}
	if err := disks.nodeMayRead(d, "n2"); err == nil {
		t.Error("another node reads a tenant's upload")
	}
	d.Status.Node = ""
	if err := disks.nodeMayRead(d, "n1"); err == nil {
		t.Error("a node reads the upload of a disk placed nowhere")
	}
	if images := imageUploads(nil, t.TempDir()); images.nodeMayRead != nil {
		t.Error("golden images are for every node")
	}
}
