package importer

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// bomb compresses n zero bytes: a few KiB that expand to n.
func bomb(t *testing.T, n int) []byte {
	t.Helper()
	var buf bytes.Buffer
	w, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	zeros := make([]byte, 1<<20)
	for i := 0; i < n>>20; i++ {
		if _, err := w.Write(zeros); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestGzipBombStopsAtTheDisksDeclaredSize(t *testing.T) {
	gz := bomb(t, 64<<20)
	dst := filepath.Join(t.TempDir(), "img")
	limit := ForDisk(1<<20, "the disk's spec.storage 1Mi")
	err := DecompressAtMost(context.Background(), bytes.NewReader(gz), dst, limit)
	if !IsTooLarge(err) || !IsRefused(err) {
		t.Fatalf("a %d-byte gzip of 64Mi for a 1Mi disk: want TooLargeError, got %v", len(gz), err)
	}
	if !strings.Contains(err.Error(), "spec.storage 1Mi") {
		t.Errorf("error %q should name the disk's declared size", err)
	}
	st, err := os.Stat(dst)
	if err != nil {
		t.Fatal(err)
	}
	if st.Size() > limit.Bytes {
		t.Fatalf("wrote %d bytes, more than the limit %d", st.Size(), limit.Bytes)
	}
	// The same image for a disk it fits is accepted whole.
	if err := DecompressAtMost(context.Background(), bytes.NewReader(gz), dst, ForDisk(64<<20, "64Mi")); err != nil {
		t.Fatalf("64Mi into a 64Mi disk: %v", err)
	}
	if st, _ := os.Stat(dst); st.Size() != 64<<20 {
		t.Fatalf("decompressed %d bytes, want 64Mi", st.Size())
	}
}

func TestXzBombStopsAtTheLimit(t *testing.T) {
	src := filepath.Join(t.TempDir(), "zeros")
	if err := os.WriteFile(src, make([]byte, 32<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("xz", "-zc", src).Output()
	if err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(t.TempDir(), "img")
	err = DecompressAtMost(context.Background(), bytes.NewReader(out), dst, Limit{Bytes: 4 << 20, Why: "4Mi"})
	if !IsTooLarge(err) {
		t.Fatalf("xz of 32Mi with a 4Mi limit: want TooLargeError, got %v", err)
	}
	if st, _ := os.Stat(dst); st.Size() > 4<<20 {
		t.Fatalf("wrote %d bytes past the limit", st.Size())
	}
}

func TestChargeRefusalStopsDecompression(t *testing.T) {
	budget := errors.New("staging full")
	left := int64(2 << 20)
	charge := func(n int64) error {
		if n > left {
			return budget
		}
		left -= n
		return nil
	}
	dst := filepath.Join(t.TempDir(), "img")
	err := DecompressAtMost(context.Background(), bytes.NewReader(bomb(t, 16<<20)), dst, Limit{Bytes: 1 << 30, Why: "1Gi", Charge: charge})
	if !errors.Is(err, budget) {
		t.Fatalf("want the charge's error, got %v", err)
	}
	if st, _ := os.Stat(dst); st.Size() > 2<<20 {
		t.Fatalf("wrote %d bytes, more than was charged", st.Size())
	}
}
