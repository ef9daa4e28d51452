// Package storage defines how a node turns a VMDisk into something QEMU opens. Each storage
// class has a driver; drivers declare their capabilities so that callers (scheduler, migration,
// HA) ask flags instead of switching on names.
package storage

import (
	"context"
	"fmt"
	"strings"

	apps "kumo.dev/kumo/pkg/apis/apps/v1alpha1"
)

// Info states a driver's capabilities.
type Info struct {
	// Name is the storage class the driver serves.
	Name string
	// Shared: every node reaches the same disk (a VM may restart or migrate elsewhere).
	Shared bool
	// Snapshots, Clones, OnlineResize: what the backend can do natively.
	Snapshots, Clones, OnlineResize bool
}

// Volume is how QEMU opens a prepared disk.
type Volume struct {
	// Driver is QEMU's block driver for the location: "file" (later "rbd").
	Driver string
	// Path is the file (or image) QEMU opens.
	Path string
	// Format is "qcow2" or "raw".
	Format string
	// SizeBytes is the disk's virtual size.
	SizeBytes int64
	// KeyFile is the passphrase file QEMU opens the disk's encryption with ("" when the disk is
	// not encrypted: read-only optical media).
	KeyFile string
	// RBD locates the image of Driver "rbd".
	RBD *RBDImage
}

// RBDImage is a Ceph RBD image and how to reach the cluster.
type RBDImage struct{ Pool, Namespace, Image, Conf, User string }

// Key is the tenant's disk key, as a file the node wrote for this operation (mode 0600).
type Key struct{ File string }

// Progress receives an import's progress in percent.
type Progress func(percent int)

// Uploads fetches the staged content of a source.upload disk from the API server.
type Uploads func(ctx context.Context, namespace, name, dst string, progress func(done, total int64)) error

// Driver prepares the disks of one storage class on this node.
type Driver interface {
	Info() Info
	// Ensure creates the disk if it does not exist yet — importing its source, encrypted with the
	// tenant's key — and returns how to open it. It is idempotent: a disk that exists is returned
	// as it is.
	Ensure(ctx context.Context, d *apps.VMDisk, key Key, progress Progress) (Volume, error)
	// Delete removes the data stored under an ObjectName; data that does not exist is not an error.
	Delete(ctx context.Context, namespace, object string) error
	// List returns the ObjectNames stored, by namespace, for garbage collection.
	List(ctx context.Context) (map[string][]string, error)
}

// ObjectName names a disk's data after the VMDisk's name and UID: a disk deleted and created
// again under the same name never finds the old data.
func ObjectName(d *apps.VMDisk) string {
	uid := string(d.UID)
	if len(uid) > 8 {
		uid = uid[:8]
	}
	return d.Name + "." + uid
}

// ParseObjectName splits an ObjectName into the disk's name and UID prefix.
func ParseObjectName(s string) (name, uidPrefix string, ok bool) {
	i := strings.LastIndexByte(s, '.')
	if i <= 0 {
		return "", "", false
	}
	return s[:i], s[i+1:], true
}

// Drivers maps storage classes to the drivers this node has.
type Drivers map[apps.StorageClass]Driver

// For returns the driver of a disk's class, or an error naming the class.
func (ds Drivers) For(d *apps.VMDisk) (Driver, error) {
	drv, ok := ds[d.Spec.StorageClass]
	if !ok {
		return nil, fmt.Errorf("storage class %q is not available on this node", d.Spec.StorageClass)
	}
	return drv, nil
}
