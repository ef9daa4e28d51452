package importer

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/rand"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestContentMustBeWhatItsNameOrContentTypeSays(t *testing.T) {
	need(t, "qemu-img", "prlimit", "genisoimage")
	dir := t.TempDir()
	garbage := make([]byte, 300000)
	rand.Read(garbage)
	os.WriteFile(filepath.Join(dir, "garbage.qcow2"), garbage, 0o600)
	os.WriteFile(filepath.Join(dir, "garbage.img"), garbage, 0o600)
	os.WriteFile(filepath.Join(dir, "whole.bin"), garbage[:512*500], 0o600)
	run(t, "qemu-img", "create", "-q", "-f", "qcow2", filepath.Join(dir, "good.qcow2"), "16M")
	qcow, _ := os.ReadFile(filepath.Join(dir, "good.qcow2"))
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(qcow)
	zw.Close()
	os.WriteFile(filepath.Join(dir, "good.qcow2.gz"), gz.Bytes(), 0o600)
	os.WriteFile(filepath.Join(dir, "mislabelled.raw"), qcow, 0o600)
	os.WriteFile(filepath.Join(dir, "cloud.img"), qcow, 0o600) // served as application/x-raw-disk-image
	run(t, "genisoimage", "-quiet", "-V", "KUMOCD", "-o", filepath.Join(dir, "cd.iso"), "/etc/hostname")
	files := http.FileServer(http.Dir(dir))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/typed" { // raw bytes served as a qcow2 by Content-Type
			w.Header().Set("Content-Type", "application/x-qemu-disk")
			w.Write(garbage[:512*500])
			return
		}
		files.ServeHTTP(w, r)
	}))
	defer srv.Close()

	for _, tc := range []struct {
		path, refusal, format string
	}{
		{"/garbage.qcow2", "named .qcow2 but content is raw", ""},
		{"/mislabelled.raw", "named .raw but content is qcow2", ""},
		{"/typed", "served as application/x-qemu-disk (qcow2) but content is raw", ""},
		{"/garbage.img", "whole number of 512-byte sectors", ""}, // .img claims nothing; the size still tells
		{"/good.qcow2", "", "qcow2"},
		{"/good.qcow2.gz", "", "qcow2"},
		{"/cloud.img", "", "qcow2"}, // .img names raw and qcow2 images alike
		{"/cd.iso", "", "raw"},
		{"/whole.bin", "", "raw"},
	} {
		info, err := Fetch(context.Background(), Source{URL: srv.URL + tc.path, Networks: testNets}, filepath.Join(t.TempDir(), "dl"), nil)
		switch {
		case tc.refusal != "" && (!IsRefused(err) || !strings.Contains(err.Error(), tc.refusal)):
			t.Errorf("%s: %v, want refused: %q", tc.path, err, tc.refusal)
		case tc.refusal == "" && (err != nil || info.Format != tc.format):
			t.Errorf("%s: %v %+v, want accepted as %s", tc.path, err, info, tc.format)
		}
	}
}
