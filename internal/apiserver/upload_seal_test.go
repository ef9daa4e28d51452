package apiserver

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"kumo.dev/kumo/internal/storage/importer"
	apps "kumo.dev/kumo/pkg/apis/apps/v1alpha1"
)

// plaintextOf is a recognisable, non-repeating-looking content of n bytes.
func plaintextOf(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = "tenant-secret-"[i%14]
	}
	return b
}

func sealed(t *testing.T, plain, key []byte, uid string) string {
	t.Helper()
	dir := t.TempDir()
	src, dst := filepath.Join(dir, "plain"), filepath.Join(dir, "sealed")
	if err := os.WriteFile(src, plain, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := sealFile(src, dst, key, uid); err != nil {
		t.Fatal(err)
	}
	return dst
}

func unseal(path string, key []byte, uid string) ([]byte, error) {
	r, _, err := openSealed(path, key, uid)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	return io.ReadAll(r)
}

func TestSealedUploadRoundTripsAndHoldsNoPlaintext(t *testing.T) {
	key := bytes.Repeat([]byte{7}, 32)
	for _, n := range []int{0, 1, sealChunk - 1, sealChunk, sealChunk + 1, 3*sealChunk + 12345} {
		plain := plaintextOf(n)
		path := sealed(t, plain, key, "uid-1")
		raw, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if n >= 14 && bytes.Contains(raw, []byte("tenant-secret-")) {
			t.Errorf("%d bytes: the staged file holds the plaintext", n)
		}
		got, err := unseal(path, key, "uid-1")
		if err != nil {
			t.Fatalf("%d bytes: %v", n, err)
		}
		if !bytes.Equal(got, plain) {
			t.Errorf("%d bytes: round trip gave %d different bytes", n, len(got))
		}
	}
}

func TestSealedUploadRefusesTamperingAndOtherKeysOrObjects(t *testing.T) {
	key := bytes.Repeat([]byte{7}, 32)
	plain := plaintextOf(3*sealChunk + 100)
	path := sealed(t, plain, key, "uid-1")
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	write := func(b []byte) string {
		p := filepath.Join(t.TempDir(), "f")
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	chunk := sealChunk + 16
	flipped := bytes.Clone(raw)
	flipped[sealHeaderSize+2*chunk+5] ^= 1
	swapped := bytes.Clone(raw)
	copy(swapped[sealHeaderSize:], raw[sealHeaderSize+chunk:sealHeaderSize+2*chunk])
	copy(swapped[sealHeaderSize+chunk:], raw[sealHeaderSize:sealHeaderSize+chunk])
	lastDropped := raw[:sealHeaderSize+3*chunk]
	resized := bytes.Clone(lastDropped)
	resized[sealHeaderSize-1] = 0 // claim 3 whole chunks: the third was not sealed as the last
	resized[sealHeaderSize-2] = 0
	resized[sealHeaderSize-3] = 3
	for name, tc := range map[string]struct {
		path, uid string
		key       []byte
	}{
		"a flipped bit":        {write(flipped), "uid-1", key},
		"swapped chunks":       {write(swapped), "uid-1", key},
		"a truncated file":     {write(raw[:len(raw)-1]), "uid-1", key},
		"the last chunk cut":   {write(lastDropped), "uid-1", key},
		"a rewritten size":     {write(resized), "uid-1", key},
		"a plaintext file":     {write(plain), "uid-1", key},
		"another object's UID": {path, "uid-2", key},
		"another tenant's key": {path, "uid-1", bytes.Repeat([]byte{8}, 32)},
	} {
		got, err := unseal(tc.path, tc.key, tc.uid)
		if !errors.Is(err, errSealBroken) {
			t.Errorf("%s: want errSealBroken, got %v (%d bytes)", name, err, len(got))
		}
	}
}

func TestReceivedDiskUploadIsStagedSealedAndGoesOnceReady(t *testing.T) {
	if _, err := exec.LookPath("qemu-img"); err != nil {
		t.Skip("qemu-img is needed to inspect an upload")
	}
	dir := t.TempDir()
	key := bytes.Repeat([]byte{9}, 32)
	u := diskUploads(nil, nil, dir)
	d := &apps.VMDisk{ObjectMeta: metav1.ObjectMeta{Name: "d", Namespace: "tenant-a", UID: "uid-1"}}
	d.Spec.Source.Upload = &apps.UploadSource{}
	path := u.stagedPath(d.Namespace, d.UID)
	plain := plaintextOf(1 << 20)
	if _, _, err := u.receive(context.Background(), bytes.NewReader(plain), path, key, string(d.UID), importer.Limit{}); err != nil {
		t.Fatal(err)
	}
	files, _ := filepath.Glob(filepath.Join(filepath.Dir(path), "*"))
	if len(files) != 1 || files[0] != path {
		t.Fatalf("staged files %v, want only %s (no plaintext left behind)", files, path)
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(raw, []byte("tenant-secret-")) {
		t.Fatal("the staged upload holds the tenant's plaintext")
	}
	if got, err := unseal(path, key, string(d.UID)); err != nil || !bytes.Equal(got, plain) {
		t.Fatalf("the node would not get the upload back: %v", err)
	}
	d.Status.Phase = apps.DiskPending
	u.afterStatus(d, nil)
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("a staged upload went before its disk was Ready: %v", err)
	}
	d.Status.Phase = apps.DiskReady
	u.afterStatus(d, nil)
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Errorf("the staged upload of a Ready disk is kept: %v", err)
	}
}
