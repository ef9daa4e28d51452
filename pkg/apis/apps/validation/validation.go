// Package validation checks VMDisk and VMInstance objects: every problem is reported with its
// field path and a sentence a user can act on. It is pure: references to other objects (instance
// types, profiles) are checked by the API server's admission, not here.
package validation

import (
	"fmt"
	"net/url"
	"strings"

	"golang.org/x/crypto/ssh"
	"k8s.io/apimachinery/pkg/api/resource"
	apimachineryvalidation "k8s.io/apimachinery/pkg/api/validation"
	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"sigs.k8s.io/yaml"

	apps "kumo.dev/kumo/pkg/apis/apps/v1alpha1"
)

var (
	storageClasses  = []string{string(apps.StorageReplicated), string(apps.StorageLocal)}
	externalMethods = []string{string(apps.PortList), string(apps.WholeIP)}
	diskBuses       = []string{string(apps.BusVirtio), string(apps.BusSATA), string(apps.BusSCSI)}
	bootloaders     = []string{string(apps.BootloaderBIOS), string(apps.BootloaderUEFI)}
	runStrategies   = []string{string(apps.RunAlways), string(apps.RunHalted), string(apps.RunManual), string(apps.RunRerunOnFailure), string(apps.RunOnce)}
)

// cloudInitHeaders are the first lines cloud-init recognises for user-data.
var cloudInitHeaders = []string{
	"#cloud-config", "#!", "#include", "#cloud-boothook", "#part-handler",
	"#cloud-config-archive", "#cloud-config-jsonp", "## template: jinja", "Content-Type: multipart/",
}

const (
	// maxDiskSizeBytes bounds spec.storage: 64 TiB, far above any disk a node holds, to catch typos.
	maxDiskSizeBytes = int64(64) << 40
	// minDiskSizeBytes is the smallest disk: 1 MiB, the alignment every partitioning tool uses.
	minDiskSizeBytes = int64(1) << 20
	// sectorSize: QEMU and Ceph size disks in whole 512-byte sectors.
	sectorSize = 512
)

// ValidateVMDisk checks a disk on creation.
func ValidateVMDisk(d *apps.VMDisk) field.ErrorList {
	errs := apimachineryvalidation.ValidateObjectMeta(&d.ObjectMeta, true, apimachineryvalidation.NameIsDNSSubdomain, field.NewPath("metadata"))
	spec := field.NewPath("spec")
	errs = append(errs, validateDiskSource(d.Spec.Source, spec.Child("source"))...)
	if src := d.Spec.Source; d.Spec.Optical && src.HTTP == nil && src.Image == nil && src.Upload == nil && src.Disk == nil {
		errs = append(errs, field.Required(spec.Child("source"), "an optical disk (spec.optical: true) needs content: http, image, upload or disk"))
	}
	errs = append(errs, validateStorage(d.Spec.Storage, spec.Child("storage"))...)
	errs = append(errs, validateLocalSize(d, spec.Child("storage"))...)
	if d.Spec.SchedulingClass != "" {
		errs = append(errs, validateRefName(d.Spec.SchedulingClass, spec.Child("schedulingClass"), "scheduling class")...)
	}
	if !sets.New(storageClasses...).Has(string(d.Spec.StorageClass)) {
		errs = append(errs, field.NotSupported(spec.Child("storageClass"), d.Spec.StorageClass, storageClasses))
	}
	return errs
}

// validateStorage checks a disk size: what QEMU and Ceph can create, a whole number of 512-byte
// sectors, at least MinDiskSize and at most 64Ti. "1m" (one thousandth of a byte) or "0.5" would
// otherwise be stored and fail only when a node creates the disk.
func validateStorage(q *resource.Quantity, path *field.Path) field.ErrorList {
	switch {
	case q == nil:
		return field.ErrorList{field.Required(path, "the disk's size, e.g. 20Gi")}
	case q.Sign() <= 0:
		return field.ErrorList{field.Invalid(path, q.String(), "must be a positive size, e.g. 20Gi")}
	case q.CmpInt64(maxDiskSizeBytes) > 0:
		// CmpInt64, not Value(): Value wraps sizes beyond int64 (e.g. 1e30) to small numbers.
		return field.ErrorList{field.Invalid(path, q.String(), "must be at most 64Ti")}
	}
	// Value rounds a fraction up: a size is whole when it equals its rounded value.
	bytes := q.Value()
	switch {
	case q.Cmp(*resource.NewQuantity(bytes, resource.BinarySI)) != 0:
		return field.ErrorList{field.Invalid(path, q.String(), "must be a whole number of bytes, e.g. 20Gi")}
	case bytes < minDiskSizeBytes:
		return field.ErrorList{field.Invalid(path, q.String(), "must be at least 1Mi")}
	case bytes%sectorSize != 0:
		return field.ErrorList{field.Invalid(path, q.String(), fmt.Sprintf("must be a multiple of %d bytes (a whole number of sectors), e.g. %s", sectorSize,
			resource.NewQuantity((bytes/sectorSize+1)*sectorSize, resource.BinarySI).String()))}
	}
	return nil
}

// ValidateVMDiskUpdate checks a change to a disk: storage may only grow, storageClass, source and
// optical never change.
func ValidateVMDiskUpdate(d, old *apps.VMDisk) field.ErrorList {
	errs := apimachineryvalidation.ValidateObjectMetaUpdate(&d.ObjectMeta, &old.ObjectMeta, field.NewPath("metadata"))
	errs = append(errs, ValidateVMDisk(d)...)
	spec := field.NewPath("spec")
	if d.Spec.StorageClass != old.Spec.StorageClass {
		errs = append(errs, field.Forbidden(spec.Child("storageClass"),
			fmt.Sprintf("cannot change from %q to %q: a disk keeps its storage class", old.Spec.StorageClass, d.Spec.StorageClass)))
	}
	if d.Spec.Storage != nil && old.Spec.Storage != nil && d.Spec.Storage.Cmp(*old.Spec.Storage) < 0 {
		errs = append(errs, field.Forbidden(spec.Child("storage"),
			fmt.Sprintf("cannot shrink the disk from %s to %s: disks may only grow", old.Spec.Storage.String(), d.Spec.Storage.String())))
	}
	if !equalSource(d.Spec.Source, old.Spec.Source) {
		errs = append(errs, field.Forbidden(spec.Child("source"), "cannot change after the disk is created"))
	}
	if d.Spec.Optical != old.Spec.Optical {
		errs = append(errs, field.Forbidden(spec.Child("optical"), "cannot change after the disk is created"))
	}
	return errs
}

// ValidateImportURL checks the URL of an import (a VMDisk's or a GoldenImage's http source): http
// or https with a host, and no credentials — they would be echoed in listings, statuses and
// events. The value shown in an error never holds the password.
func ValidateImportURL(raw string, path *field.Path) field.ErrorList {
	if raw == "" {
		return field.ErrorList{field.Required(path, "the image's URL")}
	}
	u, err := url.Parse(raw)
	if err != nil {
		return field.ErrorList{field.Invalid(path, "(unparsable URL)", "must be an http:// or https:// URL with a host")}
	}
	if u.User != nil {
		return field.ErrorList{field.Invalid(path, u.Redacted(), "must not carry credentials (user:password@)")}
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return field.ErrorList{field.Invalid(path, raw, "must be an http:// or https:// URL with a host")}
	}
	return nil
}

func validateDiskSource(s apps.VMDiskSource, path *field.Path) field.ErrorList {
	var errs field.ErrorList
	var set []string
	if s.HTTP != nil {
		set = append(set, "http")
		errs = append(errs, ValidateImportURL(s.HTTP.URL, path.Child("http", "url"))...)
	}
	if s.Image != nil {
		set = append(set, "image")
		errs = append(errs, validateRefName(s.Image.Name, path.Child("image", "name"), "golden image")...)
	}
	if s.Upload != nil {
		set = append(set, "upload")
	}
	if s.Disk != nil {
		set = append(set, "disk")
		errs = append(errs, validateRefName(s.Disk.Name, path.Child("disk", "name"), "VMDisk")...)
	}
	if len(set) > 1 {
		errs = append(errs, field.Invalid(path, strings.Join(set, ", "),
			"must name at most one source (http, image, upload or disk); none makes a blank disk"))
	}
	return errs
}

func validateRefName(name string, path *field.Path, what string) field.ErrorList {
	if name == "" {
		return field.ErrorList{field.Required(path, "the name of the "+what)}
	}
	var errs field.ErrorList
	for _, msg := range validation.IsDNS1123Subdomain(name) {
		errs = append(errs, field.Invalid(path, name, msg))
	}
	return errs
}

func equalSource(a, b apps.VMDiskSource) bool {
	switch {
	case (a.HTTP == nil) != (b.HTTP == nil), (a.Image == nil) != (b.Image == nil),
		(a.Upload == nil) != (b.Upload == nil), (a.Disk == nil) != (b.Disk == nil):
		return false
	case a.HTTP != nil && a.HTTP.URL != b.HTTP.URL, a.Image != nil && a.Image.Name != b.Image.Name,
		a.Disk != nil && a.Disk.Name != b.Disk.Name:
		return false
	}
	return true
}

// ValidateVMInstance checks a VM on creation and on update.
func ValidateVMInstance(vm *apps.VMInstance) field.ErrorList {
	errs := apimachineryvalidation.ValidateObjectMeta(&vm.ObjectMeta, true, apimachineryvalidation.NameIsDNSLabel, field.NewPath("metadata"))
	s := vm.Spec
	spec := field.NewPath("spec")
	if !sets.New(externalMethods...).Has(string(s.ExternalMethod)) {
		errs = append(errs, field.NotSupported(spec.Child("externalMethod"), s.ExternalMethod, externalMethods))
	}
	seen := map[int32]bool{}
	for i, p := range s.ExternalPorts {
		path := spec.Child("externalPorts").Index(i)
		if p < 1 || p > 65535 {
			errs = append(errs, field.Invalid(path, p, "must be a port between 1 and 65535"))
		} else if seen[p] {
			errs = append(errs, field.Duplicate(path, p))
		}
		seen[p] = true
	}
	if !sets.New(runStrategies...).Has(string(s.RunStrategy)) {
		errs = append(errs, field.NotSupported(spec.Child("runStrategy"), s.RunStrategy, runStrategies))
	} else if s.Running != nil && apps.RunStrategyFor(*s.Running) != s.RunStrategy {
		errs = append(errs, field.Invalid(spec.Child("running"), *s.Running,
			fmt.Sprintf("conflicts with runStrategy %q: set only one of running and runStrategy", s.RunStrategy)))
	}
	_, sized := s.ExplicitSize()
	if s.InstanceType == "" {
		if !sized {
			errs = append(errs, field.Required(spec.Child("instanceType"), "an instance type such as u1.medium (kumo get instancetypes lists them), or resources with cpu and memory"))
		}
	} else {
		errs = append(errs, validateRefName(s.InstanceType, spec.Child("instanceType"), "instance type")...)
	}
	if s.InstanceProfile != "" {
		errs = append(errs, validateRefName(s.InstanceProfile, spec.Child("instanceProfile"), "instance profile")...)
	}
	disks := map[string]bool{}
	for i, d := range s.Disks {
		path := spec.Child("disks").Index(i)
		errs = append(errs, validateRefName(d.Name, path.Child("name"), "VMDisk")...)
		if d.Name != "" && disks[d.Name] {
			errs = append(errs, field.Duplicate(path.Child("name"), d.Name))
		}
		disks[d.Name] = true
		if d.Bus != "" && !sets.New(diskBuses...).Has(string(d.Bus)) {
			errs = append(errs, field.NotSupported(path.Child("bus"), d.Bus, diskBuses))
		}
	}
	for _, nets := range []struct {
		name string
		refs []apps.NetworkRef
	}{{"networks", s.Networks}, {"subnets", s.Subnets}} {
		for i, n := range nets.refs {
			errs = append(errs, validateRefName(n.Name, spec.Child(nets.name).Index(i).Child("name"), "network")...)
		}
	}
	if len(s.GPUs) > 0 {
		errs = append(errs, field.Forbidden(spec.Child("gpus"), "no node of this cloud offers GPUs; leave the list empty"))
	}
	errs = append(errs, validateCPUModel(s.CPUModel, spec.Child("cpuModel"))...)
	errs = append(errs, validateFirmware(s.Firmware, spec.Child("firmware"))...)
	errs = append(errs, validateResources(s.Resources, s.InstanceType, spec.Child("resources"))...)
	if s.SchedulingClass != "" {
		errs = append(errs, validateRefName(s.SchedulingClass, spec.Child("schedulingClass"), "scheduling class")...)
	}
	sizeErrs, parse := validateSSHKeysSize(s.SSHKeys, spec.Child("sshKeys"))
	errs = append(errs, sizeErrs...)
	for i, k := range s.SSHKeys {
		if !parse {
			break // too many or too long to parse
		}
		if strings.ContainsAny(strings.TrimRight(k, "\r\n"), "\r\n") {
			errs = append(errs, field.Invalid(spec.Child("sshKeys").Index(i), abbreviate(k), "must be one key on a single line; list several keys as separate items"))
		} else if _, _, _, _, err := ssh.ParseAuthorizedKey([]byte(k)); err != nil {
			errs = append(errs, field.Invalid(spec.Child("sshKeys").Index(i), abbreviate(k),
				"is not an OpenSSH public key (expected e.g. \"ssh-ed25519 AAAA... user@host\"): "+err.Error()))
		}
	}
	errs = append(errs, validateCloudInit(s.CloudInit, spec.Child("cloudInit"))...)
	if len(s.CloudInitSeed) > 253 {
		errs = append(errs, field.TooLong(spec.Child("cloudInitSeed"), "", 253))
	}
	return errs
}

// ValidateVMInstanceUpdate checks a change to a VM.
func ValidateVMInstanceUpdate(vm, old *apps.VMInstance) field.ErrorList {
	errs := apimachineryvalidation.ValidateObjectMetaUpdate(&vm.ObjectMeta, &old.ObjectMeta, field.NewPath("metadata"))
	return append(errs, ValidateVMInstance(vm)...)
}

func validateCloudInit(ud string, path *field.Path) field.ErrorList {
	if ud == "" {
		return nil
	}
	if len(ud) > MaxCloudInitBytes {
		return field.ErrorList{field.TooLong(path, "", MaxCloudInitBytes)}
	}
	header := ""
	for _, h := range cloudInitHeaders {
		// The longest header wins, as in cloud-init: #cloud-config-archive is not #cloud-config.
		if strings.HasPrefix(ud, h) && len(h) > len(header) {
			header = h
		}
	}
	if header == "" {
		first, _, _ := strings.Cut(ud, "\n")
		return field.ErrorList{field.Invalid(path, abbreviate(first),
			"must start with #cloud-config or another cloud-init header (#!, #include, #cloud-boothook, Content-Type: multipart/...)")}
	}
	if header == "#cloud-config" {
		var doc interface{}
		if err := yaml.Unmarshal([]byte(ud), &doc); err != nil {
			return field.ErrorList{field.Invalid(path, "#cloud-config ...", "is not valid YAML: "+err.Error())}
		}
		if _, ok := doc.(map[string]interface{}); !ok && doc != nil {
			return field.ErrorList{field.Invalid(path, "#cloud-config ...", "must be a YAML mapping (key: value) after #cloud-config")}
		}
	}
	return nil
}

func abbreviate(s string) string {
	if len(s) > 40 {
		return s[:37] + "..."
	}
	return s
}
