package importer

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func need(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed", tool)
		}
	}
}

func run(t *testing.T, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}

// canary is a host file that hostile images point at; it must stay untouched.
func canary(t *testing.T) (string, func()) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "canary")
	if err := os.WriteFile(path, bytes.Repeat([]byte("canary!!"), 1<<14), 0o600); err != nil {
		t.Fatal(err)
	}
	st, _ := os.Stat(path)
	return path, func() {
		data, err := os.ReadFile(path)
		st2, _ := os.Stat(path)
		if err != nil || !bytes.Equal(data, bytes.Repeat([]byte("canary!!"), 1<<14)) || !st2.ModTime().Equal(st.ModTime()) {
			t.Errorf("canary %s was changed", path)
		}
	}
}

func TestInspectRefusesHostileImages(t *testing.T) {
	need(t, "qemu-img", "prlimit")
	dir := t.TempDir()
	target, check := canary(t)
	img := func(name string) string { return filepath.Join(dir, name) }

	run(t, "qemu-img", "create", "-q", "-f", "qcow2", "-b", target, "-F", "raw", img("backing.qcow2"))
	run(t, "qemu-img", "create", "-q", "-f", "qcow2", "-o", "data_file="+img("elsewhere.raw"), img("datafile.qcow2"), "1M")
	run(t, "qemu-img", "create", "-q", "-f", "qcow2", "-b", `json:{"driver":"file","filename":"`+target+`"}`, "-F", "raw", "-u", img("json.qcow2"), "1M")
	run(t, "qemu-img", "create", "-q", "-f", "qcow2", img("huge.qcow2"), "1P")
	run(t, "qemu-img", "create", "-q", "-f", "qed", img("other.qed"), "1M")
	vmdkDescriptor := "# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\ncreateType=\"monolithicFlat\"\n\n" +
		"RW 256 FLAT \"" + target + "\" 0\n\nddb.virtualHWVersion = \"4\"\n"
	if err := os.WriteFile(img("hostpath.vmdk"), []byte(vmdkDescriptor), 0o600); err != nil {
		t.Fatal(err)
	}
	run(t, "qemu-img", "create", "-q", "-f", "qcow2", img("whole.qcow2"), "64M")
	run(t, "qemu-io", "-f", "qcow2", "-c", "write -P 0x5a 0 8M", img("whole.qcow2"))
	data, _ := os.ReadFile(img("whole.qcow2"))
	if err := os.WriteFile(img("truncated.qcow2"), data[:len(data)/2], 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(img("empty.img"), nil, 0o600); err != nil {
		t.Fatal(err)
	}

	cases := map[string]string{
		"backing.qcow2":   "backing file",
		"datafile.qcow2":  "external file",
		"json.qcow2":      "backing file",
		"huge.qcow2":      "absurd",
		"other.qed":       `format "qed" is not accepted`,
		"hostpath.vmdk":   "points outside the image file",
		"truncated.qcow2": "corrupt or truncated",
		"empty.img":       "virtual size is 0",
	}
	for name, want := range cases {
		_, err := Inspect(context.Background(), img(name))
		if !IsRefused(err) || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: want a refusal containing %q, got %v", name, want, err)
		}
	}
	check()
}

func TestInspectAcceptsEveryAllowedFormat(t *testing.T) {
	need(t, "qemu-img", "prlimit")
	dir := t.TempDir()
	src := filepath.Join(dir, "src.raw")
	run(t, "qemu-img", "create", "-q", "-f", "raw", src, "16M")
	for _, f := range []string{"raw", "qcow2", "vmdk", "vhdx", "vdi"} {
		dst := filepath.Join(dir, "img."+f)
		args := []string{"convert", "-q", "-f", "raw", "-O", f}
		if f == "vmdk" {
			args = append(args, "-o", "subformat=streamOptimized")
		}
		run(t, "qemu-img", append(args, src, dst)...)
		info, err := Inspect(context.Background(), dst)
		if err != nil {
			t.Errorf("%s: %v", f, err)
			continue
		}
		if info.Format != f || info.VirtualSize != 16<<20 {
			t.Errorf("%s: inspected as %+v", f, info)
		}
	}
}

func TestDownloadDecompressesAndConvertReportsProgress(t *testing.T) {
	need(t, "qemu-img", "prlimit", "xz")
	dir := t.TempDir()
	qcow := filepath.Join(dir, "img.qcow2")
	run(t, "qemu-img", "create", "-q", "-f", "qcow2", qcow, "32M")
	run(t, "qemu-io", "-f", "qcow2", "-c", "write -P 0x42 1M 2M", qcow)
	raw, _ := os.ReadFile(qcow)
	var gz bytes.Buffer
	w := gzip.NewWriter(&gz)
	w.Write(raw)
	w.Close()
	run(t, "xz", "-k", qcow)
	xzData, _ := os.ReadFile(qcow + ".xz")
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/img.qcow2":
			w.Write(raw)
		case "/img.qcow2.gz":
			w.Write(gz.Bytes())
		case "/img.qcow2.xz":
			w.Write(xzData)
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	for _, name := range []string{"img.qcow2", "img.qcow2.gz", "img.qcow2.xz"} {
		dst := filepath.Join(dir, "dl-"+name)
		var calls int
		if err := Download(context.Background(), srv.URL+"/"+name, testNets, dst, func(done, total int64) { calls++ }); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		got, _ := os.ReadFile(dst)
		if !bytes.Equal(got, raw) {
			t.Errorf("%s: downloaded content differs", name)
		}
		if calls == 0 {
			t.Errorf("%s: no progress reported", name)
		}
	}
	if err := Download(context.Background(), srv.URL+"/missing", testNets, filepath.Join(dir, "x"), nil); !IsRefused(err) || !strings.Contains(err.Error(), "404") {
		t.Errorf("missing image: %v", err)
	}

	info, err := Inspect(context.Background(), filepath.Join(dir, "dl-img.qcow2.xz"))
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "out.raw")
	var last int
	if err := Convert(context.Background(), filepath.Join(dir, "dl-img.qcow2.xz"), info, Target{Args: []string{"-O", "raw", out}}, func(p int) { last = p }); err != nil {
		t.Fatal(err)
	}
	if last != 100 {
		t.Errorf("last progress %d%%", last)
	}
	run(t, "qemu-io", "-f", "raw", "-c", "read -P 0x42 1M 2M", out)
}

// ova writes a tar archive of the named files (in order) to path.
func ova(t *testing.T, path string, files ...[2]string) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	tw := tar.NewWriter(f)
	for _, nf := range files {
		data, err := os.ReadFile(nf[1])
		if err != nil {
			data = []byte(nf[1]) // literal content
		}
		tw.WriteHeader(&tar.Header{Name: nf[0], Mode: 0o644, Size: int64(len(data)), Typeflag: tar.TypeReg})
		tw.Write(data)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	f.Close()
}

func TestFetchTakesTheDiskOutOfAnOVA(t *testing.T) {
	need(t, "qemu-img", "prlimit")
	dir := t.TempDir()
	qcow, vmdk := filepath.Join(dir, "src.qcow2"), filepath.Join(dir, "disk1.vmdk")
	run(t, "qemu-img", "create", "-q", "-f", "qcow2", qcow, "16M")
	run(t, "qemu-io", "-f", "qcow2", "-c", "write -P 0x42 1M 1M", qcow)
	run(t, "qemu-img", "convert", "-q", "-f", "qcow2", "-O", "vmdk", "-o", "subformat=streamOptimized", qcow, vmdk)
	ovf := `<?xml version="1.0"?><Envelope><References><File ovf:href="vm-disk1.vmdk" ovf:id="file1"/></References></Envelope>`
	good, empty, hostile := filepath.Join(dir, "vm.ova"), filepath.Join(dir, "empty.ova"), filepath.Join(dir, "hostile.ova")
	ova(t, good, [2]string{"vm.ovf", ovf}, [2]string{"vm.mf", "SHA256(vm-disk1.vmdk)= 00"}, [2]string{"vm-disk1.vmdk", vmdk})
	ova(t, empty, [2]string{"vm.ovf", ovf})
	target, check := canary(t)
	defer check()
	descriptor := "# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\ncreateType=\"monolithicFlat\"\n\nRW 32 FLAT \"" + target + "\" 0\n"
	ova(t, hostile, [2]string{"vm.ovf", ovf}, [2]string{"../../etc/evil.vmdk", descriptor})

	copyFrom := func(src string) Fetcher {
		return func(ctx context.Context, dst string, p Progress) error {
			data, err := os.ReadFile(src)
			if err != nil {
				return err
			}
			return os.WriteFile(dst, data, 0o600)
		}
	}
	dst := filepath.Join(dir, "fetched")
	info, err := Fetch(context.Background(), Source{Fetch: copyFrom(good)}, dst, nil)
	if err != nil || info.Format != "vmdk" || info.VirtualSize != 16<<20 {
		t.Fatalf("OVA: %+v %v", info, err)
	}
	run(t, "qemu-io", "-f", "vmdk", "-r", "-c", "read -P 0x42 1M 1M", dst)
	if _, err := Fetch(context.Background(), Source{Fetch: copyFrom(empty)}, dst, nil); !IsRefused(err) || !strings.Contains(err.Error(), "no VMDK disk") {
		t.Errorf("OVA without a disk: %v", err)
	}
	if _, err := Fetch(context.Background(), Source{Fetch: copyFrom(hostile)}, dst, nil); !IsRefused(err) || !strings.Contains(err.Error(), "extent") {
		t.Errorf("OVA whose VMDK points at a host file: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "..", "..", "etc", "evil.vmdk")); err == nil {
		t.Error("an OVA member was written outside the download")
	}
}
