package validation

import (
	"encoding/json"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	apiequality "k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/validation/field"

	apps "kumo.dev/kumo/pkg/apis/apps/v1alpha1"
	"kumo.dev/kumo/pkg/client"
)

// examplesDir holds the manifests shipped with Kumo, relative to this package.
var examplesDir = filepath.Join("..", "..", "..", "..", "examples")

const (
	seedDiskList = `apiVersion: apps.cozystack.io/v1alpha1
kind: VMInstance
metadata:
  name: vm-short-disks
  namespace: tenant-a
spec:
  instanceType: u1.medium
  disks: [a, b]
`
	seedJSONMixedDisks = `{"apiVersion":"apps.cozystack.io/v1alpha1","kind":"VMInstance",` +
		`"metadata":{"name":"vm-json","namespace":"tenant-a"},` +
		`"spec":{"instanceType":"m1.large","running":false,"externalMethod":"WholeIP","disks":["a",{"name":"b"}]}}`
	seedTwoSources = `apiVersion: apps.cozystack.io/v1alpha1
kind: VMDisk
metadata:
  name: disk-two-sources
  namespace: tenant-a
spec:
  source:
    http:
      url: https://example.com/a.img
    image:
      name: ubuntu-2404
  storage: 10Gi
`
	seedBadYAML = `apiVersion: apps.cozystack.io/v1alpha1
kind: VMDisk
metadata: {name: [
spec:
  storage: 10Gi
`
	seedWrongTypes = `apiVersion: apps.cozystack.io/v1alpha1
kind: VMInstance
metadata:
  name: vm-wrong-types
spec:
  instanceType: u1.medium
  externalPorts: "22"
`
	seedUnknownKind = `apiVersion: apps.cozystack.io/v1alpha1
kind: VMSnapshot
metadata:
  name: snap
spec:
  disk: disk-example
`
	seedEmpty = ``
)

// readExamples returns the example manifests; it fails when they are missing, since then the
// fuzz corpus would silently lose its most realistic seeds.
func readExamples(tb testing.TB) map[string][]byte {
	tb.Helper()
	out := map[string][]byte{}
	for _, name := range []string{"vmdisk.yaml", "vminstance.yaml"} {
		b, err := os.ReadFile(filepath.Join(examplesDir, name))
		if err != nil {
			tb.Fatalf("example manifest missing: %v", err)
		}
		out[name] = b
	}
	matches, err := filepath.Glob(filepath.Join(examplesDir, "*.yaml"))
	if err != nil || len(matches) < len(out) {
		tb.Fatalf("examples/*.yaml holds %d files (%v), want at least %d", len(matches), err, len(out))
	}
	for _, m := range matches {
		if _, ok := out[filepath.Base(m)]; ok {
			continue
		}
		b, err := os.ReadFile(m)
		if err != nil {
			tb.Fatal(err)
		}
		out[filepath.Base(m)] = b
	}
	return out
}

func FuzzManifest(f *testing.F) {
	examples := readExamples(f)
	names := make([]string, 0, len(examples))
	for name := range examples {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		f.Add(examples[name])
	}
	for _, s := range []string{seedDiskList, seedJSONMixedDisks, seedTwoSources, seedBadYAML, seedWrongTypes, seedUnknownKind, seedEmpty} {
		f.Add([]byte(s))
	}
	dec := client.Codecs.UniversalDeserializer()
	f.Fuzz(func(t *testing.T, data []byte) {
		obj, gvk, err := dec.Decode(data, nil, nil)
		if err != nil {
			return
		}
		// The decoder finds apiVersion and kind case-insensitively ("ApiVersion:") but decodes the
		// body case-sensitively, leaving TypeMeta empty; the API server, like this, always writes
		// the kind it decoded.
		obj.GetObjectKind().SetGroupVersionKind(*gvk)
		switch o := obj.(type) {
		case *apps.VMDisk:
			checkDisk(t, o)
		case *apps.VMInstance:
			checkVM(t, o)
		}
	})
}

// prepare does what the API server does before validation: the namespace comes from the request
// path when the manifest has none, and defaults are applied.
func prepare(meta *metav1.ObjectMeta) {
	if meta.Namespace == "" {
		meta.Namespace = "tenant-a"
	}
}

// dropServerOwned clears the metadata the server owns and JSON cannot carry exactly: timestamps
// lose their sub-second part (metav1.Time is written in RFC 3339 seconds) and managed fields' raw
// JSON is compacted. That is apimachinery's behaviour, not the Kumo types'. Status is cleared by
// the callers for the same reason (it holds metav1.Times) and because validation never reads it.
func dropServerOwned(meta *metav1.ObjectMeta) {
	meta.CreationTimestamp = metav1.Time{}
	meta.DeletionTimestamp = nil
	meta.ManagedFields = nil
}

func checkDisk(t *testing.T, d *apps.VMDisk) {
	prepare(&d.ObjectMeta)
	apps.SetDefaultsVMDisk(d)
	errs := ValidateVMDisk(d)
	checkUpdateOfItself(t, errs, func() field.ErrorList {
		old := d.DeepCopy()
		cur := d.DeepCopy()
		setResourceVersion(&old.ObjectMeta, &cur.ObjectMeta)
		return ValidateVMDiskUpdate(cur, old)
	})
	if len(errs) > 0 {
		return
	}
	dropServerOwned(&d.ObjectMeta)
	d.Status = apps.VMDiskStatus{}
	back := &apps.VMDisk{}
	roundTrip(t, d, back)
	apps.SetDefaultsVMDisk(back)
	if errs := ValidateVMDisk(back); len(errs) > 0 {
		t.Fatalf("a valid disk is invalid after a JSON round trip: %v\nbefore: %#v\nafter:  %#v", errs, d, back)
	}
	if !apiequality.Semantic.DeepEqual(d, back) {
		t.Fatalf("a valid disk changed in a JSON round trip:\nbefore: %#v\nafter:  %#v", d, back)
	}
}

func checkVM(t *testing.T, vm *apps.VMInstance) {
	prepare(&vm.ObjectMeta)
	apps.SetDefaultsVMInstance(vm)
	errs := ValidateVMInstance(vm)
	checkUpdateOfItself(t, errs, func() field.ErrorList {
		old := vm.DeepCopy()
		cur := vm.DeepCopy()
		setResourceVersion(&old.ObjectMeta, &cur.ObjectMeta)
		return ValidateVMInstanceUpdate(cur, old)
	})
	if len(errs) > 0 {
		return
	}
	dropServerOwned(&vm.ObjectMeta)
	vm.Status = apps.VMInstanceStatus{}
	back := &apps.VMInstance{}
	roundTrip(t, vm, back)
	apps.SetDefaultsVMInstance(back)
	if errs := ValidateVMInstance(back); len(errs) > 0 {
		t.Fatalf("a valid VM is invalid after a JSON round trip: %v\nbefore: %#v\nafter:  %#v", errs, vm, back)
	}
	if !apiequality.Semantic.DeepEqual(vm, back) {
		t.Fatalf("a valid VM changed in a JSON round trip:\nbefore: %#v\nafter:  %#v", vm, back)
	}
}

// roundTrip writes in as JSON and reads it back into out, both with encoding/json and with the
// scheme's deserializer (which the API server uses), and requires the two reads to agree.
func roundTrip(t *testing.T, in, out runtime.Object) {
	t.Helper()
	b, err := json.Marshal(in)
	if err != nil {
		t.Fatalf("marshal a valid object: %v\n%#v", err, in)
	}
	if err := json.Unmarshal(b, out); err != nil {
		t.Fatalf("unmarshal our own JSON: %v\n%s", err, b)
	}
	viaScheme, _, err := client.Codecs.UniversalDeserializer().Decode(b, nil, nil)
	if err != nil {
		t.Fatalf("the scheme cannot decode our own JSON: %v\n%s", err, b)
	}
	if !apiequality.Semantic.DeepEqual(viaScheme, out) {
		t.Fatalf("encoding/json and the scheme read the same JSON differently:\n%s\njson:   %#v\nscheme: %#v", b, out, viaScheme)
	}
}

func setResourceVersion(metas ...*metav1.ObjectMeta) {
	for _, m := range metas {
		if m.ResourceVersion == "" {
			m.ResourceVersion = "1"
		}
	}
}

// checkUpdateOfItself: updating an object to itself must not report any spec error that
// creation did not already report (nothing "changed").
func checkUpdateOfItself(t *testing.T, createErrs field.ErrorList, update func() field.ErrorList) {
	t.Helper()
	known := map[string]bool{}
	for _, e := range createErrs {
		known[e.Error()] = true
	}
	for _, e := range update() {
		if strings.HasPrefix(e.Field, "spec.") && !known[e.Error()] {
			t.Fatalf("updating an object to itself reports %v, which creation did not", e)
		}
	}
}

// TestManifestSeeds pins what the fuzz seeds are, so that the corpus keeps reaching both the
// round trip (valid seeds) and the error paths (invalid ones).
func TestManifestSeeds(t *testing.T) {
	dec := client.Codecs.UniversalDeserializer()
	valid := map[string][]byte{"disks: [a, b]": []byte(seedDiskList), "JSON with mixed disks": []byte(seedJSONMixedDisks)}
	for name, b := range readExamples(t) {
		valid["examples/"+name] = b
	}
	for name, b := range valid {
		t.Run("valid "+name, func(t *testing.T) {
			obj, _, err := dec.Decode(b, nil, nil)
			if err != nil {
				t.Fatalf("decode: %v", err)
			}
			var errs field.ErrorList
			switch o := obj.(type) {
			case *apps.VMDisk:
				prepare(&o.ObjectMeta)
				apps.SetDefaultsVMDisk(o)
				errs = ValidateVMDisk(o)
			case *apps.VMInstance:
				prepare(&o.ObjectMeta)
				apps.SetDefaultsVMInstance(o)
				errs = ValidateVMInstance(o)
			default:
				t.Fatalf("decoded a %T, want a VMDisk or VMInstance", obj)
			}
			assertErrors(t, errs)
		})
	}

	t.Run("disks: [a, b] decodes to two references in order", func(t *testing.T) {
		obj, _, err := dec.Decode([]byte(seedDiskList), nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		vm := obj.(*apps.VMInstance)
		if len(vm.Spec.Disks) != 2 || vm.Spec.Disks[0].Name != "a" || vm.Spec.Disks[1].Name != "b" {
			t.Errorf("disks = %+v, want [a b]", vm.Spec.Disks)
		}
	})

	t.Run("two sources are rejected at spec.source", func(t *testing.T) {
		obj, _, err := dec.Decode([]byte(seedTwoSources), nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		d := obj.(*apps.VMDisk)
		apps.SetDefaultsVMDisk(d)
		assertErrors(t, ValidateVMDisk(d), wantErr{field.ErrorTypeInvalid, "spec.source"})
	})

	for name, s := range map[string]string{
		"bad YAML": seedBadYAML, "externalPorts as a string": seedWrongTypes,
		"unknown kind": seedUnknownKind, "empty document": seedEmpty,
	} {
		t.Run(name+" does not decode", func(t *testing.T) {
			if obj, _, err := dec.Decode([]byte(s), nil, nil); err == nil {
				t.Errorf("decoded %#v, want an error", obj)
			}
		})
	}
}
