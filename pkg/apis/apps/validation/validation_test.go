package validation

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"fmt"
	"sort"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation/field"

	apps "kumo.dev/kumo/pkg/apis/apps/v1alpha1"
)

// wantErr is one expected validation error: its type and its field path.
type wantErr struct {
	typ   field.ErrorType
	field string
}

func (w wantErr) String() string { return fmt.Sprintf("%s %s", w.typ, w.field) }

// assertErrors fails unless errs holds exactly the wanted (type, field) pairs, in any order.
func assertErrors(t *testing.T, errs field.ErrorList, want ...wantErr) {
	t.Helper()
	got := make([]string, 0, len(errs))
	for _, e := range errs {
		got = append(got, wantErr{e.Type, e.Field}.String())
	}
	exp := make([]string, 0, len(want))
	for _, w := range want {
		exp = append(exp, w.String())
	}
	sort.Strings(got)
	sort.Strings(exp)
	if strings.Join(got, "\n") != strings.Join(exp, "\n") {
		t.Errorf("errors mismatch\n got: %q\nwant: %q\nfull: %v", got, exp, errs)
	}
}

func qty(s string) *resource.Quantity {
	q := resource.MustParse(s)
	return &q
}

// newDisk is a defaulted blank disk with valid metadata; mutate changes it before defaulting.
func newDisk(mutate func(*apps.VMDisk)) *apps.VMDisk {
	d := &apps.VMDisk{ObjectMeta: metav1.ObjectMeta{Name: "disk-a", Namespace: "tenant-a"}}
	if mutate != nil {
		mutate(d)
	}
	apps.SetDefaultsVMDisk(d)
	return d
}

// newVM is a defaulted u1.medium VM with valid metadata; mutate changes it before defaulting.
func newVM(mutate func(*apps.VMInstance)) *apps.VMInstance {
	vm := &apps.VMInstance{
		ObjectMeta: metav1.ObjectMeta{Name: "vm-a", Namespace: "tenant-a"},
		Spec:       apps.VMInstanceSpec{InstanceType: "u1.medium"},
	}
	if mutate != nil {
		mutate(vm)
	}
	apps.SetDefaultsVMInstance(vm)
	return vm
}

func TestValidateVMDisk(t *testing.T) {
	cases := []struct {
		name string
		// before runs before defaulting, after runs after it (to undo a default).
		before func(*apps.VMDisk)
		after  func(*apps.VMDisk)
		want   []wantErr
	}{
		{name: "blank disk with defaults is valid"},
		{
			name: "http source with https url is valid",
			before: func(d *apps.VMDisk) {
				d.Spec.Source.HTTP = &apps.HTTPSource{URL: "https://cloud-images.ubuntu.com/noble.img"}
			},
		},
		{
			name:   "http source with http url is valid",
			before: func(d *apps.VMDisk) { d.Spec.Source.HTTP = &apps.HTTPSource{URL: "http://mirror.example/x.qcow2.xz"} },
		},
		{
			name:   "image source is valid",
			before: func(d *apps.VMDisk) { d.Spec.Source.Image = &apps.ImageSource{Name: "ubuntu-2404"} },
		},
		{
			name:   "upload source {} is valid",
			before: func(d *apps.VMDisk) { d.Spec.Source.Upload = &apps.UploadSource{} },
		},
		{
			name:   "disk clone source is valid",
			before: func(d *apps.VMDisk) { d.Spec.Source.Disk = &apps.DiskSource{Name: "disk-b"} },
		},
		{
			name: "optical replicated disk of exactly 64Ti is valid",
			before: func(d *apps.VMDisk) {
				d.Spec.Optical, d.Spec.StorageClass, d.Spec.Storage = true, apps.StorageReplicated, qty("64Ti")
				d.Spec.Source.HTTP = &apps.HTTPSource{URL: "https://example.com/installer.iso"}
			},
		},
		{
			name: "blank optical disk is rejected at spec.source",
			before: func(d *apps.VMDisk) {
				d.Spec.Optical, d.Spec.Source = true, apps.VMDiskSource{}
			},
			want: []wantErr{{field.ErrorTypeRequired, "spec.source"}},
		},
		{
			name: "http and image sources together are rejected at spec.source",
			before: func(d *apps.VMDisk) {
				d.Spec.Source.HTTP = &apps.HTTPSource{URL: "https://example.com/a.img"}
				d.Spec.Source.Image = &apps.ImageSource{Name: "ubuntu-2404"}
			},
			want: []wantErr{{field.ErrorTypeInvalid, "spec.source"}},
		},
		{
			name: "upload and disk sources together are rejected at spec.source",
			before: func(d *apps.VMDisk) {
				d.Spec.Source.Upload = &apps.UploadSource{}
				d.Spec.Source.Disk = &apps.DiskSource{Name: "disk-b"}
			},
			want: []wantErr{{field.ErrorTypeInvalid, "spec.source"}},
		},
		{
			name:   "ftp url is rejected at spec.source.http.url",
			before: func(d *apps.VMDisk) { d.Spec.Source.HTTP = &apps.HTTPSource{URL: "ftp://example.com/a.img"} },
			want:   []wantErr{{field.ErrorTypeInvalid, "spec.source.http.url"}},
		},
		{
			name:   "url with credentials is rejected at spec.source.http.url",
			before: func(d *apps.VMDisk) { d.Spec.Source.HTTP = &apps.HTTPSource{URL: "https://user:pw@example.com/a.img"} },
			want:   []wantErr{{field.ErrorTypeInvalid, "spec.source.http.url"}},
		},
		{
			name:   "url with a user name alone is rejected at spec.source.http.url",
			before: func(d *apps.VMDisk) { d.Spec.Source.HTTP = &apps.HTTPSource{URL: "https://token@example.com/a.img"} },
			want:   []wantErr{{field.ErrorTypeInvalid, "spec.source.http.url"}},
		},
		{
			name:   "file url is rejected at spec.source.http.url",
			before: func(d *apps.VMDisk) { d.Spec.Source.HTTP = &apps.HTTPSource{URL: "file:///etc/passwd"} },
			want:   []wantErr{{field.ErrorTypeInvalid, "spec.source.http.url"}},
		},
		{
			name:   "url without a scheme is rejected",
			before: func(d *apps.VMDisk) { d.Spec.Source.HTTP = &apps.HTTPSource{URL: "example.com/a.img"} },
			want:   []wantErr{{field.ErrorTypeInvalid, "spec.source.http.url"}},
		},
		{
			name:   "https url without a host is rejected",
			before: func(d *apps.VMDisk) { d.Spec.Source.HTTP = &apps.HTTPSource{URL: "https:///a.img"} },
			want:   []wantErr{{field.ErrorTypeInvalid, "spec.source.http.url"}},
		},
		{
			name:   "empty http url is required",
			before: func(d *apps.VMDisk) { d.Spec.Source.HTTP = &apps.HTTPSource{} },
			want:   []wantErr{{field.ErrorTypeRequired, "spec.source.http.url"}},
		},
		{
			name:   "image without a name is required",
			before: func(d *apps.VMDisk) { d.Spec.Source.Image = &apps.ImageSource{} },
			want:   []wantErr{{field.ErrorTypeRequired, "spec.source.image.name"}},
		},
		{
			name:   "image name that is not a DNS subdomain is invalid",
			before: func(d *apps.VMDisk) { d.Spec.Source.Image = &apps.ImageSource{Name: "Ubuntu_24.04"} },
			want:   []wantErr{{field.ErrorTypeInvalid, "spec.source.image.name"}},
		},
		{
			name:   "clone source name that is not a DNS subdomain is invalid",
			before: func(d *apps.VMDisk) { d.Spec.Source.Disk = &apps.DiskSource{Name: "Disk B"} },
			want:   []wantErr{{field.ErrorTypeInvalid, "spec.source.disk.name"}},
		},
		{
			name:  "missing storage is required",
			after: func(d *apps.VMDisk) { d.Spec.Storage = nil },
			want:  []wantErr{{field.ErrorTypeRequired, "spec.storage"}},
		},
		{
			name:   "zero storage is invalid",
			before: func(d *apps.VMDisk) { d.Spec.Storage = qty("0") },
			want:   []wantErr{{field.ErrorTypeInvalid, "spec.storage"}},
		},
		{
			name:   "negative storage is invalid",
			before: func(d *apps.VMDisk) { d.Spec.Storage = qty("-1Gi") },
			want:   []wantErr{{field.ErrorTypeInvalid, "spec.storage"}},
		},
		{
			name:   "storage one byte over 64Ti is invalid",
			before: func(d *apps.VMDisk) { d.Spec.Storage = resource.NewQuantity(64<<40+1, resource.BinarySI) },
			want:   []wantErr{{field.ErrorTypeInvalid, "spec.storage"}},
		},
		{
			name:   "storage of 65Ti is invalid",
			before: func(d *apps.VMDisk) { d.Spec.Storage = qty("65Ti") },
			want:   []wantErr{{field.ErrorTypeInvalid, "spec.storage"}},
		},
		{
			name:   "storage of 16Ei (beyond int64) is invalid",
			before: func(d *apps.VMDisk) { d.Spec.Storage = qty("16Ei") },
			want:   []wantErr{{field.ErrorTypeInvalid, "spec.storage"}},
		},
		{
			// 1e30 bytes is held as a decimal that does not fit int64: Quantity.Value wraps it.
			name:   "storage of 1e30 bytes (beyond int64) is invalid",
			before: func(d *apps.VMDisk) { d.Spec.Storage = qty("1e30") },
			want:   []wantErr{{field.ErrorTypeInvalid, "spec.storage"}},
		},
		{
			name:   "unknown storageClass is not supported",
			before: func(d *apps.VMDisk) { d.Spec.StorageClass = "ssd" },
			want:   []wantErr{{field.ErrorTypeNotSupported, "spec.storageClass"}},
		},
		{
			name:   "storageClass is case sensitive",
			before: func(d *apps.VMDisk) { d.Spec.StorageClass = "Replicated" },
			want:   []wantErr{{field.ErrorTypeNotSupported, "spec.storageClass"}},
		},
		{
			name:  "empty storageClass after defaulting is not supported",
			after: func(d *apps.VMDisk) { d.Spec.StorageClass = "" },
			want:  []wantErr{{field.ErrorTypeNotSupported, "spec.storageClass"}},
		},
		{
			name:   "missing namespace is required",
			before: func(d *apps.VMDisk) { d.Namespace = "" },
			want:   []wantErr{{field.ErrorTypeRequired, "metadata.namespace"}},
		},
		{
			name:   "name that is not a DNS subdomain is invalid",
			before: func(d *apps.VMDisk) { d.Name = "Disk_A" },
			want:   []wantErr{{field.ErrorTypeInvalid, "metadata.name"}},
		},
		{
			name: "every problem is reported at once",
			before: func(d *apps.VMDisk) {
				d.Spec.Source.HTTP = &apps.HTTPSource{URL: "gopher://x"}
				d.Spec.Source.Upload = &apps.UploadSource{}
				d.Spec.Storage = qty("-5Gi")
				d.Spec.StorageClass = "nvme"
			},
			want: []wantErr{
				{field.ErrorTypeInvalid, "spec.source.http.url"},
				{field.ErrorTypeInvalid, "spec.source"},
				{field.ErrorTypeInvalid, "spec.storage"},
				{field.ErrorTypeNotSupported, "spec.storageClass"},
			},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d := newDisk(tc.before)
			if tc.after != nil {
				tc.after(d)
			}
			assertErrors(t, ValidateVMDisk(d), tc.want...)
		})
	}
}

func TestValidateVMDiskStorageMessages(t *testing.T) {
	d := newDisk(func(d *apps.VMDisk) { d.Spec.Storage = qty("65Ti") })
	errs := ValidateVMDisk(d)
	if len(errs) != 1 || !strings.Contains(errs[0].Detail, "64Ti") {
		t.Errorf("an oversized disk should be told the 64Ti limit, got %v", errs)
	}
	d = newDisk(func(d *apps.VMDisk) {
		d.Spec.Source.HTTP = &apps.HTTPSource{URL: "https://a/b"}
		d.Spec.Source.Disk = &apps.DiskSource{Name: "c"}
	})
	errs = ValidateVMDisk(d)
	if len(errs) != 1 || errs[0].BadValue != "http, disk" {
		t.Errorf("two sources should name both sources, got %#v", errs)
	}
}

// TestValidateVMDiskStorageIsWholeSectors: a size QEMU or Ceph cannot create is refused at the
// API, naming spec.storage, instead of being stored and failing when a node creates the disk.
func TestValidateVMDiskStorageIsWholeSectors(t *testing.T) {
	for _, tc := range []struct {
		size   string
		detail string // "" when valid
	}{
		{"1m", "whole number of bytes"},
		{"0.5", "whole number of bytes"},
		{"1.5Ki", "at least 1Mi"},
		{"1048576500m", "whole number of bytes"},
		{"512", "at least 1Mi"},
		{"1023Ki", "at least 1Mi"},
		{"1M", "at least 1Mi"},
		{"1000001k", "multiple of 512"},
		{"1500000", "multiple of 512"},
		{"10G", ""}, // 10^10 is 512 × 19531250
		{"1Mi", ""},
		{"1048576", ""},
		{"1049088", ""}, // 1Mi + one sector
		{"2.5Gi", ""},
		{"5Gi", ""},
		{"1e9", ""},
		{"64Ti", ""},
	} {
		t.Run(tc.size, func(t *testing.T) {
			d := newDisk(func(d *apps.VMDisk) { d.Spec.Storage = qty(tc.size) })
			errs := ValidateVMDisk(d)
			if tc.detail == "" {
				assertErrors(t, errs)
				return
			}
			assertErrors(t, errs, wantErr{field.ErrorTypeInvalid, "spec.storage"})
			if len(errs) == 1 && !strings.Contains(errs[0].Detail, tc.detail) {
				t.Errorf("storage %s: detail %q should say %q", tc.size, errs[0].Detail, tc.detail)
			}
		})
	}
	// Growing a disk to a size that is not whole sectors is refused too.
	old := newDisk(func(d *apps.VMDisk) { d.Spec.Storage = qty("1Gi") })
	old.ResourceVersion = "1"
	d := old.DeepCopy()
	d.Spec.Storage = qty("1073742000")
	assertErrors(t, ValidateVMDiskUpdate(d, old), wantErr{field.ErrorTypeInvalid, "spec.storage"})
}

func TestValidateVMDiskUpdate(t *testing.T) {
	base := func(d *apps.VMDisk) {
		d.ResourceVersion = "7"
		d.Spec.Source.Image = &apps.ImageSource{Name: "ubuntu-2404"}
		d.Spec.Storage = qty("10Gi")
	}
	cases := []struct {
		name   string
		change func(*apps.VMDisk)
		want   []wantErr
	}{
		{name: "no change is valid", change: func(*apps.VMDisk) {}},
		{name: "same size written differently is valid", change: func(d *apps.VMDisk) { d.Spec.Storage = qty("10240Mi") }},
		{name: "growing storage is valid", change: func(d *apps.VMDisk) { d.Spec.Storage = qty("20Gi") }},
		{name: "growing to 64Ti is valid", change: func(d *apps.VMDisk) { d.Spec.Storage = qty("64Ti") }},
		{name: "labels may change", change: func(d *apps.VMDisk) { d.Labels = map[string]string{"team": "web"} }},
		{
			name:   "shrinking storage is forbidden at spec.storage",
			change: func(d *apps.VMDisk) { d.Spec.Storage = qty("5Gi") },
			want:   []wantErr{{field.ErrorTypeForbidden, "spec.storage"}},
		},
		{
			name:   "shrinking by one sector is forbidden",
			change: func(d *apps.VMDisk) { d.Spec.Storage = resource.NewQuantity(10<<30-512, resource.BinarySI) },
			want:   []wantErr{{field.ErrorTypeForbidden, "spec.storage"}},
		},
		{
			name:   "storageClass change is forbidden",
			change: func(d *apps.VMDisk) { d.Spec.StorageClass = apps.StorageLocal },
			want:   []wantErr{{field.ErrorTypeForbidden, "spec.storageClass"}},
		},
		{
			name:   "changing the image name is forbidden",
			change: func(d *apps.VMDisk) { d.Spec.Source.Image = &apps.ImageSource{Name: "debian-12"} },
			want:   []wantErr{{field.ErrorTypeForbidden, "spec.source"}},
		},
		{
			name: "switching source kind is forbidden",
			change: func(d *apps.VMDisk) {
				d.Spec.Source.Image = nil
				d.Spec.Source.HTTP = &apps.HTTPSource{URL: "https://example.com/a.img"}
			},
			want: []wantErr{{field.ErrorTypeForbidden, "spec.source"}},
		},
		{
			name:   "removing the source is forbidden",
			change: func(d *apps.VMDisk) { d.Spec.Source.Image = nil },
			want:   []wantErr{{field.ErrorTypeForbidden, "spec.source"}},
		},
		{
			name:   "optical change is forbidden",
			change: func(d *apps.VMDisk) { d.Spec.Optical = true },
			want:   []wantErr{{field.ErrorTypeForbidden, "spec.optical"}},
		},
		{
			name:   "renaming is rejected by metadata checks",
			change: func(d *apps.VMDisk) { d.Name = "disk-z" },
			want:   []wantErr{{field.ErrorTypeInvalid, "metadata.name"}},
		},
		{
			name:   "update without resourceVersion is rejected",
			change: func(d *apps.VMDisk) { d.ResourceVersion = "" },
			want:   []wantErr{{field.ErrorTypeInvalid, "metadata.resourceVersion"}},
		},
		{
			name:   "the new object is also validated as on creation",
			change: func(d *apps.VMDisk) { d.Spec.Storage = qty("100Ti") },
			want:   []wantErr{{field.ErrorTypeInvalid, "spec.storage"}},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			old := newDisk(base)
			d := old.DeepCopy()
			tc.change(d)
			assertErrors(t, ValidateVMDiskUpdate(d, old), tc.want...)
		})
	}

	t.Run("shrink message names both sizes", func(t *testing.T) {
		old := newDisk(base)
		d := old.DeepCopy()
		d.Spec.Storage = qty("5Gi")
		errs := ValidateVMDiskUpdate(d, old)
		if len(errs) != 1 {
			t.Fatalf("want one error, got %v", errs)
		}
		if !strings.Contains(errs[0].Detail, "10Gi") || !strings.Contains(errs[0].Detail, "5Gi") {
			t.Errorf("message %q should name the old size 10Gi and the new size 5Gi", errs[0].Detail)
		}
		if strings.Index(errs[0].Detail, "10Gi") > strings.Index(errs[0].Detail, "5Gi") {
			t.Errorf("message %q should say from 10Gi to 5Gi", errs[0].Detail)
		}
	})
	t.Run("storageClass message names both classes", func(t *testing.T) {
		old := newDisk(base)
		d := old.DeepCopy()
		d.Spec.StorageClass = apps.StorageLocal
		errs := ValidateVMDiskUpdate(d, old)
		if len(errs) != 1 || !strings.Contains(errs[0].Detail, `"replicated"`) || !strings.Contains(errs[0].Detail, `"local"`) {
			t.Errorf("want one error naming replicated and local, got %v", errs)
		}
	})
}

// sshKey returns the authorized_keys line of a freshly generated public key.
func sshKey(t *testing.T, pub interface{}) string {
	t.Helper()
	k, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(ssh.MarshalAuthorizedKey(k)))
}

func TestValidateVMInstance(t *testing.T) {
	edPub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	ed, rsaLine := sshKey(t, edPub), sshKey(t, &rsaKey.PublicKey)
	yes, no := true, false

	cases := []struct {
		name   string
		before func(*apps.VMInstance)
		after  func(*apps.VMInstance)
		want   []wantErr
	}{
		{name: "minimal VM with defaults is valid"},
		{
			name: "fully specified VM is valid",
			before: func(vm *apps.VMInstance) {
				vm.Spec.External = true
				vm.Spec.ExternalMethod = apps.WholeIP
				vm.Spec.ExternalPorts = []int32{1, 22, 443, 65535}
				vm.Spec.Running = &yes
				vm.Spec.InstanceProfile = "ubuntu"
				vm.Spec.Disks = []apps.VMDiskRef{{Name: "system"}, {Name: "data.disk-1"}}
				vm.Spec.GPUs = []apps.GPURef{}
				vm.Spec.Resources = &apps.Resources{}
				vm.Spec.SSHKeys = []string{ed, rsaLine + " user@host"}
				vm.Spec.CloudInit = "#cloud-config\nusers: []"
				vm.Spec.CloudInitSeed = "v2"
			},
		},
		{name: "every run strategy is accepted: Halted", before: func(vm *apps.VMInstance) { vm.Spec.RunStrategy = apps.RunHalted }},
		{name: "every run strategy is accepted: Manual", before: func(vm *apps.VMInstance) { vm.Spec.RunStrategy = apps.RunManual }},
		{name: "every run strategy is accepted: RerunOnFailure", before: func(vm *apps.VMInstance) { vm.Spec.RunStrategy = apps.RunRerunOnFailure }},
		{name: "every run strategy is accepted: Once", before: func(vm *apps.VMInstance) { vm.Spec.RunStrategy = apps.RunOnce }},
		{name: "running=false alone defaults to Halted and is valid", before: func(vm *apps.VMInstance) { vm.Spec.Running = &no }},
		{name: "running=true with runStrategy Always agrees", before: func(vm *apps.VMInstance) { vm.Spec.Running, vm.Spec.RunStrategy = &yes, apps.RunAlways }},

		{
			name:   "external port 0 is out of range",
			before: func(vm *apps.VMInstance) { vm.Spec.ExternalPorts = []int32{22, 0} },
			want:   []wantErr{{field.ErrorTypeInvalid, "spec.externalPorts[1]"}},
		},
		{
			name:   "external port 65536 is out of range",
			before: func(vm *apps.VMInstance) { vm.Spec.ExternalPorts = []int32{65536} },
			want:   []wantErr{{field.ErrorTypeInvalid, "spec.externalPorts[0]"}},
		},
		{
			name:   "negative external port is out of range",
			before: func(vm *apps.VMInstance) { vm.Spec.ExternalPorts = []int32{-22} },
			want:   []wantErr{{field.ErrorTypeInvalid, "spec.externalPorts[0]"}},
		},
		{
			name:   "duplicate external port is reported at its second index",
			before: func(vm *apps.VMInstance) { vm.Spec.ExternalPorts = []int32{22, 80, 22} },
			want:   []wantErr{{field.ErrorTypeDuplicate, "spec.externalPorts[2]"}},
		},
		{
			name:   "a port repeated three times is a duplicate twice",
			before: func(vm *apps.VMInstance) { vm.Spec.ExternalPorts = []int32{443, 443, 443} },
			want: []wantErr{
				{field.ErrorTypeDuplicate, "spec.externalPorts[1]"},
				{field.ErrorTypeDuplicate, "spec.externalPorts[2]"},
			},
		},
		{
			name:   "unknown externalMethod is not supported",
			before: func(vm *apps.VMInstance) { vm.Spec.ExternalMethod = "NodePort" },
			want:   []wantErr{{field.ErrorTypeNotSupported, "spec.externalMethod"}},
		},
		{
			name:   "unknown runStrategy is not supported",
			before: func(vm *apps.VMInstance) { vm.Spec.RunStrategy = "Sometimes" },
			want:   []wantErr{{field.ErrorTypeNotSupported, "spec.runStrategy"}},
		},
		{
			name:   "running=true with runStrategy Halted conflicts at spec.running",
			before: func(vm *apps.VMInstance) { vm.Spec.Running, vm.Spec.RunStrategy = &yes, apps.RunHalted },
			want:   []wantErr{{field.ErrorTypeInvalid, "spec.running"}},
		},
		{
			name:   "running=false with runStrategy Always conflicts at spec.running",
			before: func(vm *apps.VMInstance) { vm.Spec.Running, vm.Spec.RunStrategy = &no, apps.RunAlways },
			want:   []wantErr{{field.ErrorTypeInvalid, "spec.running"}},
		},
		{
			name:   "running=true with runStrategy Manual conflicts at spec.running",
			before: func(vm *apps.VMInstance) { vm.Spec.Running, vm.Spec.RunStrategy = &yes, apps.RunManual },
			want:   []wantErr{{field.ErrorTypeInvalid, "spec.running"}},
		},
		{
			name:   "missing instanceType is required",
			before: func(vm *apps.VMInstance) { vm.Spec.InstanceType = "" },
			want:   []wantErr{{field.ErrorTypeRequired, "spec.instanceType"}},
		},
		{
			name:   "instanceType that is not a DNS subdomain is invalid",
			before: func(vm *apps.VMInstance) { vm.Spec.InstanceType = "U1 Medium" },
			want:   []wantErr{{field.ErrorTypeInvalid, "spec.instanceType"}},
		},
		{
			name:   "instanceProfile that is not a DNS subdomain is invalid",
			before: func(vm *apps.VMInstance) { vm.Spec.InstanceProfile = "Windows_11" },
			want:   []wantErr{{field.ErrorTypeInvalid, "spec.instanceProfile"}},
		},
		{
			name:   "disk name with upper case and underscore is invalid",
			before: func(vm *apps.VMInstance) { vm.Spec.Disks = []apps.VMDiskRef{{Name: "ok"}, {Name: "Bad_Disk"}} },
			want:   []wantErr{{field.ErrorTypeInvalid, "spec.disks[1].name"}},
		},
		{
			name:   "empty disk name is required",
			before: func(vm *apps.VMInstance) { vm.Spec.Disks = []apps.VMDiskRef{{Name: ""}} },
			want:   []wantErr{{field.ErrorTypeRequired, "spec.disks[0].name"}},
		},
		{
			name:   "two empty disk names are each required, not duplicates",
			before: func(vm *apps.VMInstance) { vm.Spec.Disks = []apps.VMDiskRef{{}, {}} },
			want: []wantErr{
				{field.ErrorTypeRequired, "spec.disks[0].name"},
				{field.ErrorTypeRequired, "spec.disks[1].name"},
			},
		},
		{
			name:   "the same disk attached twice is a duplicate at its second index",
			before: func(vm *apps.VMInstance) { vm.Spec.Disks = []apps.VMDiskRef{{Name: "a"}, {Name: "b"}, {Name: "a"}} },
			want:   []wantErr{{field.ErrorTypeDuplicate, "spec.disks[2].name"}},
		},
		{
			name:   "a GPU is forbidden",
			before: func(vm *apps.VMInstance) { vm.Spec.GPUs = []apps.GPURef{{Name: "nvidia.com/AD102GL_L40S"}} },
			want:   []wantErr{{field.ErrorTypeForbidden, "spec.gpus"}},
		},
		{
			name: "empty-string resources are unset (Hikube's examples write them)",
			before: func(vm *apps.VMInstance) {
				vm.Spec.Resources = &apps.Resources{CPU: "", Memory: "", Sockets: ""}
			},
		},
		{
			name:   "an empty resources block is unset",
			before: func(vm *apps.VMInstance) { vm.Spec.Resources = &apps.Resources{} },
		},
		{
			name: "cpu, sockets and memory size the VM and override the instance type",
			before: func(vm *apps.VMInstance) {
				vm.Spec.Resources = &apps.Resources{CPU: "2", Sockets: "2", Memory: "3Gi"}
			},
		},
		{
			name: "cpu and memory size a VM without an instance type",
			before: func(vm *apps.VMInstance) {
				vm.Spec.InstanceType = ""
				vm.Spec.Resources = &apps.Resources{CPU: "1", Memory: "512Mi"}
			},
		},
		{
			name:   "cpu alone next to an instance type is refused naming memory",
			before: func(vm *apps.VMInstance) { vm.Spec.Resources = &apps.Resources{CPU: "2"} },
			want:   []wantErr{{field.ErrorTypeRequired, "spec.resources.memory"}},
		},
		{
			name:   "memory alone is refused naming cpu",
			before: func(vm *apps.VMInstance) { vm.Spec.Resources = &apps.Resources{Memory: "4Gi"} },
			want:   []wantErr{{field.ErrorTypeRequired, "spec.resources.cpu"}},
		},
		{
			name:   "sockets alone is refused naming cpu and memory",
			before: func(vm *apps.VMInstance) { vm.Spec.Resources = &apps.Resources{Sockets: "1"} },
			want:   []wantErr{{field.ErrorTypeRequired, "spec.resources.cpu"}, {field.ErrorTypeRequired, "spec.resources.memory"}},
		},
		{
			name: "partial resources without an instance type need the instance type too",
			before: func(vm *apps.VMInstance) {
				vm.Spec.InstanceType = ""
				vm.Spec.Resources = &apps.Resources{CPU: "2"}
			},
			want: []wantErr{{field.ErrorTypeRequired, "spec.resources.memory"}, {field.ErrorTypeRequired, "spec.instanceType"}},
		},
		{
			name: "fractional cpu, zero sockets and odd memory are invalid",
			before: func(vm *apps.VMInstance) {
				vm.Spec.Resources = &apps.Resources{CPU: "1500m", Sockets: "0", Memory: "1000001"}
			},
			want: []wantErr{{field.ErrorTypeInvalid, "spec.resources.cpu"}, {field.ErrorTypeInvalid, "spec.resources.sockets"}, {field.ErrorTypeInvalid, "spec.resources.memory"}},
		},
		{
			name: "more vCPUs than a VM may have are invalid",
			before: func(vm *apps.VMInstance) {
				vm.Spec.Resources = &apps.Resources{CPU: "100", Sockets: "4", Memory: "4Gi"}
			},
			want: []wantErr{{field.ErrorTypeInvalid, "spec.resources.cpu"}},
		},
		{
			name:   "memory that is not a quantity is invalid",
			before: func(vm *apps.VMInstance) { vm.Spec.Resources = &apps.Resources{CPU: "1", Memory: "lots"} },
			want:   []wantErr{{field.ErrorTypeInvalid, "spec.resources.memory"}},
		},
		{
			name: "uefi with secure boot and persistent variables is valid",
			before: func(vm *apps.VMInstance) {
				vm.Spec.Firmware = &apps.Firmware{Bootloader: apps.BootloaderUEFI, SecureBoot: true, EFIPersistent: true}
			},
		},
		{
			name:   "an unknown bootloader is not supported",
			before: func(vm *apps.VMInstance) { vm.Spec.Firmware = &apps.Firmware{Bootloader: "coreboot"} },
			want:   []wantErr{{field.ErrorTypeNotSupported, "spec.firmware.bootloader"}},
		},
		{
			name: "secure boot and persistent variables need uefi",
			before: func(vm *apps.VMInstance) {
				vm.Spec.Firmware = &apps.Firmware{Bootloader: apps.BootloaderBIOS, SecureBoot: true, EFIPersistent: true}
			},
			want: []wantErr{{field.ErrorTypeInvalid, "spec.firmware.secureBoot"}, {field.ErrorTypeInvalid, "spec.firmware.efiPersistent"}},
		},
		{
			name: "a disk bus must be virtio, sata or scsi",
			before: func(vm *apps.VMInstance) {
				vm.Spec.Disks = []apps.VMDiskRef{{Name: "a", Bus: "sata"}, {Name: "b", Bus: "ide"}}
			},
			want: []wantErr{{field.ErrorTypeNotSupported, "spec.disks[1].bus"}},
		},
		{
			name:   "a cpu model must look like a QEMU model name",
			before: func(vm *apps.VMInstance) { vm.Spec.CPUModel = "Skylake Server; rm" },
			want:   []wantErr{{field.ErrorTypeInvalid, "spec.cpuModel"}},
		},
		{
			name: "networks, subnets, netplanDhcp, externalAllowICMP and schedulingClass are accepted",
			before: func(vm *apps.VMInstance) {
				f := false
				vm.Spec.Networks = []apps.NetworkRef{{Name: "subnet-84dbec17"}}
				vm.Spec.Subnets = []apps.NetworkRef{{Name: "subnet-aa8896b5"}}
				vm.Spec.NetplanDHCP, vm.Spec.ExternalAllowICMP, vm.Spec.SchedulingClass = true, &f, "co-region-prod"
			},
		},
		{
			name:   "a network needs a name",
			before: func(vm *apps.VMInstance) { vm.Spec.Networks = []apps.NetworkRef{{}} },
			want:   []wantErr{{field.ErrorTypeRequired, "spec.networks[0].name"}},
		},
		{
			name:   "generated ed25519 and rsa keys are accepted",
			before: func(vm *apps.VMInstance) { vm.Spec.SSHKeys = []string{ed, rsaLine} },
		},
		{
			name:   "garbage ssh key is invalid at its index",
			before: func(vm *apps.VMInstance) { vm.Spec.SSHKeys = []string{ed, "not a key", rsaLine} },
			want:   []wantErr{{field.ErrorTypeInvalid, "spec.sshKeys[1]"}},
		},
		{
			name:   "private key material is not a public key",
			before: func(vm *apps.VMInstance) { vm.Spec.SSHKeys = []string{"-----BEGIN OPENSSH PRIVATE KEY-----"} },
			want:   []wantErr{{field.ErrorTypeInvalid, "spec.sshKeys[0]"}},
		},
		{
			name:   "truncated key body is invalid",
			before: func(vm *apps.VMInstance) { vm.Spec.SSHKeys = []string{ed[:len(ed)-10]} },
			want:   []wantErr{{field.ErrorTypeInvalid, "spec.sshKeys[0]"}},
		},
		{
			name:   "cloudInitSeed of 254 characters is too long",
			before: func(vm *apps.VMInstance) { vm.Spec.CloudInitSeed = strings.Repeat("s", 254) },
			want:   []wantErr{{field.ErrorTypeTooLong, "spec.cloudInitSeed"}},
		},
		{
			name:   "cloudInitSeed of 253 characters is valid",
			before: func(vm *apps.VMInstance) { vm.Spec.CloudInitSeed = strings.Repeat("s", 253) },
		},
		{
			name:   "VM name must be a DNS label (no dots)",
			before: func(vm *apps.VMInstance) { vm.Name = "vm.a" },
			want:   []wantErr{{field.ErrorTypeInvalid, "metadata.name"}},
		},
		{
			name:  "empty externalMethod and runStrategy (defaults removed) are not supported",
			after: func(vm *apps.VMInstance) { vm.Spec.ExternalMethod, vm.Spec.RunStrategy = "", "" },
			want: []wantErr{
				{field.ErrorTypeNotSupported, "spec.externalMethod"},
				{field.ErrorTypeNotSupported, "spec.runStrategy"},
			},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			vm := newVM(tc.before)
			if tc.after != nil {
				tc.after(vm)
			}
			assertErrors(t, ValidateVMInstance(vm), tc.want...)
		})
	}
}

func TestValidateVMInstanceCloudInit(t *testing.T) {
	cases := []struct {
		name      string
		cloudInit string
		wantType  field.ErrorType // "" for valid
		wantText  string          // a part of the error detail
	}{
		{name: "empty user-data is valid", cloudInit: ""},
		{name: "cloud-config with an empty users list is valid", cloudInit: "#cloud-config\nusers: []"},
		{name: "cloud-config with nothing after the header is valid", cloudInit: "#cloud-config\n"},
		{name: "cloud-config with CRLF line ends is valid", cloudInit: "#cloud-config\r\npackages:\r\n  - nginx\r\n"},
		{name: "shell script is valid", cloudInit: "#!/bin/sh\necho hi"},
		{name: "include list is valid", cloudInit: "#include\nhttps://example.com/ud"},
		{name: "boothook is valid", cloudInit: "#cloud-boothook\n#!/bin/sh\necho boot"},
		{name: "jinja template is valid", cloudInit: "## template: jinja\n#cloud-config\nhostname: {{ v1.local_hostname }}"},
		{name: "multipart MIME is valid", cloudInit: "Content-Type: multipart/mixed; boundary=\"b\"\n\n--b--"},
		{
			// cloud-config-archive is a YAML list of parts: it must not be checked as #cloud-config.
			name:      "cloud-config-archive list is valid",
			cloudInit: "#cloud-config-archive\n- type: text/cloud-config\n  content: 'users: []'\n",
		},
		{
			name:      "cloud-config-jsonp patch list is valid",
			cloudInit: `#cloud-config-jsonp` + "\n" + `[{"op": "add", "path": "/packages/-", "value": "git"}]`,
		},
		{
			name:      "cloud-config that is not YAML is invalid",
			cloudInit: "#cloud-config\n: : bad: [",
			wantType:  field.ErrorTypeInvalid, wantText: "not valid YAML",
		},
		{
			name:      "cloud-config that is a list is invalid",
			cloudInit: "#cloud-config\n- a list",
			wantType:  field.ErrorTypeInvalid, wantText: "YAML mapping",
		},
		{
			name:      "cloud-config that is a scalar is invalid",
			cloudInit: "#cloud-config\njust words",
			wantType:  field.ErrorTypeInvalid, wantText: "YAML mapping",
		},
		{
			name:      "text without a cloud-init header is invalid",
			cloudInit: "hello",
			wantType:  field.ErrorTypeInvalid, wantText: "#cloud-config",
		},
		{
			name:      "header must be on the first line",
			cloudInit: "\n#cloud-config\nusers: []",
			wantType:  field.ErrorTypeInvalid, wantText: "#cloud-config",
		},
		{
			name:      "user-data over 64KiB is too long",
			cloudInit: "#cloud-config\n" + strings.Repeat("#", 64<<10),
			wantType:  field.ErrorTypeTooLong,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			vm := newVM(func(vm *apps.VMInstance) { vm.Spec.CloudInit = tc.cloudInit })
			errs := ValidateVMInstance(vm)
			if tc.wantType == "" {
				assertErrors(t, errs)
				return
			}
			assertErrors(t, errs, wantErr{tc.wantType, "spec.cloudInit"})
			if len(errs) == 1 && !strings.Contains(errs[0].Detail, tc.wantText) {
				t.Errorf("detail %q should mention %q", errs[0].Detail, tc.wantText)
			}
		})
	}
}

func TestValidateVMInstanceBadValuesAreAbbreviated(t *testing.T) {
	long := "ssh-ed25519 " + strings.Repeat("A", 200)
	vm := newVM(func(vm *apps.VMInstance) { vm.Spec.SSHKeys = []string{long} })
	errs := ValidateVMInstance(vm)
	if len(errs) != 1 {
		t.Fatalf("want one error, got %v", errs)
	}
	bad, ok := errs[0].BadValue.(string)
	if !ok || len(bad) > 40 || !strings.HasPrefix(long, strings.TrimSuffix(bad, "...")) {
		t.Errorf("bad value should be the key cut to 40 characters, got %q", errs[0].BadValue)
	}
}

func TestValidateVMInstanceUpdate(t *testing.T) {
	yes := true
	cases := []struct {
		name   string
		change func(*apps.VMInstance)
		want   []wantErr
	}{
		{name: "no change is valid", change: func(*apps.VMInstance) {}},
		{name: "resizing to another instance type is valid", change: func(vm *apps.VMInstance) { vm.Spec.InstanceType = "u1.large" }},
		{name: "stopping the VM is valid", change: func(vm *apps.VMInstance) { vm.Spec.RunStrategy = apps.RunHalted }},
		{name: "attaching a disk is valid", change: func(vm *apps.VMInstance) { vm.Spec.Disks = append(vm.Spec.Disks, apps.VMDiskRef{Name: "data"}) }},
		{
			name:   "spec rules still apply on update",
			change: func(vm *apps.VMInstance) { vm.Spec.ExternalPorts = []int32{22, 22} },
			want:   []wantErr{{field.ErrorTypeDuplicate, "spec.externalPorts[1]"}},
		},
		{
			name:   "a running flag that contradicts the new run strategy is rejected",
			change: func(vm *apps.VMInstance) { vm.Spec.Running, vm.Spec.RunStrategy = &yes, apps.RunHalted },
			want:   []wantErr{{field.ErrorTypeInvalid, "spec.running"}},
		},
		{
			name:   "moving to another namespace is rejected",
			change: func(vm *apps.VMInstance) { vm.Namespace = "tenant-b" },
			want:   []wantErr{{field.ErrorTypeInvalid, "metadata.namespace"}},
		},
		{
			name:   "update without resourceVersion is rejected",
			change: func(vm *apps.VMInstance) { vm.ResourceVersion = "" },
			want:   []wantErr{{field.ErrorTypeInvalid, "metadata.resourceVersion"}},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			old := newVM(func(vm *apps.VMInstance) {
				vm.ResourceVersion = "3"
				vm.Spec.Disks = []apps.VMDiskRef{{Name: "system"}}
			})
			vm := old.DeepCopy()
			tc.change(vm)
			assertErrors(t, ValidateVMInstanceUpdate(vm, old), tc.want...)
		})
	}
}

func TestImportURLErrorsNeverShowThePassword(t *testing.T) {
	errs := ValidateImportURL("https://user:hunter2@example.com/a.img", field.NewPath("spec", "source", "http", "url"))
	if len(errs) != 1 || strings.Contains(errs.ToAggregate().Error(), "hunter2") || !strings.Contains(errs.ToAggregate().Error(), "credentials") {
		t.Fatalf("errors %v", errs)
	}
}
