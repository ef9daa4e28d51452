package validation

import (
	"k8s.io/apimachinery/pkg/util/validation/field"

	apps "kumo.dev/kumo/pkg/apis/apps/v1alpha1"
)

// Size limits of a VMInstance's free-form fields. They keep every object far below etcd's
// request limit (1.5 MiB; the API server refuses bodies above 1 MiB with 413) so that a tenant
// gets a 422 naming the field, never a 500 from etcd, and a handful of VMs cannot fill etcd.
const (
	// MaxSSHKeys is the most keys spec.sshKeys holds.
	MaxSSHKeys = 100
	// MaxSSHKeyBytes bounds one key: an RSA-16384 key is ~2.8 KB on its line.
	MaxSSHKeyBytes = 4 << 10
	// MaxSSHKeysBytes bounds all keys together.
	MaxSSHKeysBytes = 128 << 10
	// MaxCloudInitBytes bounds spec.cloudInit (user-data), as clouds do (EC2 16 KB, Azure 64 KB).
	MaxCloudInitBytes = 64 << 10
	// MaxLocalDiskBytes bounds a local disk: it lives on one node's filesystem (replicated disks
	// may reach 64Ti).
	MaxLocalDiskBytes = int64(16) << 40
)

// validateLocalSize caps a local disk's size.
func validateLocalSize(d *apps.VMDisk, path *field.Path) field.ErrorList {
	if d.Spec.StorageClass != apps.StorageLocal || d.Spec.Storage == nil || d.Spec.Storage.CmpInt64(MaxLocalDiskBytes) <= 0 {
		return nil
	}
	return field.ErrorList{field.Invalid(path, d.Spec.Storage.String(), "must be at most 16Ti for a local disk (it lives on one node's filesystem; replicated disks may reach 64Ti)")}
}

// validateSSHKeysSize checks the number and size of the SSH keys. It reports whether the keys
// are small enough to be parsed one by one.
func validateSSHKeysSize(keys []string, path *field.Path) (field.ErrorList, bool) {
	if len(keys) > MaxSSHKeys {
		return field.ErrorList{field.TooMany(path, len(keys), MaxSSHKeys)}, false
	}
	var errs field.ErrorList
	total := 0
	for i, k := range keys {
		total += len(k)
		if len(k) > MaxSSHKeyBytes {
			errs = append(errs, field.TooLong(path.Index(i), "", MaxSSHKeyBytes))
		}
	}
	if total > MaxSSHKeysBytes {
		e := field.TooLong(path, "", MaxSSHKeysBytes)
		e.Detail = "the keys together may have at most 131072 bytes"
		errs = append(errs, e)
	}
	return errs, len(errs) == 0
}
