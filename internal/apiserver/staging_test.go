package apiserver

import (
	"bytes"
	"compress/gzip"
	"context"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	apps "kumo.dev/kumo/pkg/apis/apps/v1alpha1"
)

func gzipOfZeros(t *testing.T, n int) []byte {
	t.Helper()
	var buf bytes.Buffer
	w := gzip.NewWriter(&buf)
	if _, err := w.Write(make([]byte, n)); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func uploadDisk(size string) *apps.VMDisk {
	d := &apps.VMDisk{ObjectMeta: metav1.ObjectMeta{Name: "d", Namespace: "tenant-a", UID: "uid-1"}}
	d.Spec.Source.Upload = &apps.UploadSource{}
	q := resource.MustParse(size)
	d.Spec.Storage = &q
	return d
}

func statusCode(err error) int32 {
	if se, ok := err.(apierrors.APIStatus); ok {
		return se.Status().Code
	}
	return 0
}

func TestUploadedGzipBombStopsAtTheDisksSizeWith413(t *testing.T) {
	dir := t.TempDir()
	u := diskUploads(nil, nil, dir)
	u.staging = newStagingBudget(dir, 1<<30)
	u.staging.floor = 0
	d := uploadDisk("1Mi")
	path := u.stagedPath(d.Namespace, d.UID)
	gz := gzipOfZeros(t, 64<<20)
	_, _, err := u.receive(context.Background(), bytes.NewReader(gz), path, bytes.Repeat([]byte{1}, 32), string(d.UID), u.limit(d))
	if statusCode(err) != http.StatusRequestEntityTooLarge || !strings.Contains(err.Error(), "spec.storage 1Mi") {
		t.Fatalf("a %d-byte gzip expanding to 64Mi for a 1Mi disk: want 413 naming spec.storage, got %v", len(gz), err)
	}
	files, _ := filepath.Glob(filepath.Join(filepath.Dir(path), "*"))
	if len(files) != 0 {
		t.Errorf("a refused upload left %v", files)
	}
	if u.staging.inflight != 0 {
		t.Errorf("a refused upload still holds %d bytes of the staging budget", u.staging.inflight)
	}
}

func TestFullStagingAreaAnswers507(t *testing.T) {
	dir := t.TempDir()
	u := diskUploads(nil, nil, dir)
	u.staging = newStagingBudget(dir, 4<<20)
	u.staging.floor = 0
	// Another tenant's upload waits for its node: 3 MiB of the 4 MiB.
	other := filepath.Join(dir, "vmdisks", "tenant-b", "uid-9.img")
	if err := os.MkdirAll(filepath.Dir(other), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(other, make([]byte, 3<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	d := uploadDisk("1Gi")
	path := u.stagedPath(d.Namespace, d.UID)
	_, _, err := u.receive(context.Background(), bytes.NewReader(gzipOfZeros(t, 2<<20)), path, bytes.Repeat([]byte{1}, 32), string(d.UID), u.limit(d))
	if statusCode(err) != http.StatusInsufficientStorage || !strings.Contains(err.Error(), "--upload-staging-limit") {
		t.Fatalf("a 2Mi upload with 1Mi of staging left: want 507 naming the limit, got %v", err)
	}
	if _, err := os.Stat(path + receivingSuffix); !os.IsNotExist(err) {
		t.Errorf("the refused upload's partial file is kept: %v", err)
	}
	// Once the other upload is consumed, the staging area takes it again (and stops at the
	// limit, not at the disk's size).
	if err := os.Remove(other); err != nil {
		t.Fatal(err)
	}
	_, _, err = u.receive(context.Background(), bytes.NewReader(gzipOfZeros(t, 8<<20)), path, bytes.Repeat([]byte{1}, 32), string(d.UID), u.limit(d))
	if statusCode(err) != http.StatusInsufficientStorage {
		t.Fatalf("an 8Mi upload with a 4Mi staging limit: want 507, got %v", err)
	}
	if u.staging.inflight != 0 {
		t.Errorf("refused uploads still hold %d bytes of the staging budget", u.staging.inflight)
	}
}
