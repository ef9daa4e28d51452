// Package storage defines how a node turns a VMDisk into something QEMU opens. Each storage
// class has a driver; drivers declare their capabilities so that callers (scheduler, migration,
// HA) ask flags instead of switching on names.
package storage

import (
	"context"
	"errors"
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

// ErrNotFound is wrapped by Open when the disk's data truly does not exist (the backend said
// so: ENOENT, rbd's exit status 2). Any other failure to look is an error of its own, never
// taken for absence.
var ErrNotFound = errors.New("disk data not found")

// ErrNoSource is wrapped when a disk's source is known not to exist (no GoldenImage of that name,
// no such source disk): preparing the disk again cannot succeed while its spec names it. A source
// that is merely not here yet (an image not cached yet) is not this error.
var ErrNoSource = errors.New("the disk's source does not exist")

// GoldenNotHere is the error of a golden image a node does not hold: it wraps ErrNoSource only
// when images knows the image is gone (it implements Gone(name) bool and says so); otherwise the
// image may not be cached yet, and a later attempt may find it.
func GoldenNotHere(images GoldenImages, name string) error {
	if g, ok := images.(interface{ Gone(name string) bool }); ok && g.Gone(name) {
		return fmt.Errorf("golden image %s: %w", name, ErrNoSource)
	}
	return fmt.Errorf("golden image %s is not on this node (yet)", name)
}

// ErrExists is wrapped by Create when the disk's data exists already: Create never replaces it.
var ErrExists = errors.New("disk data exists already")

// Request is what Create makes a disk from.
type Request struct {
	Disk *apps.VMDisk
	// Source is the VMDisk that Disk.Spec.Source.Disk names, resolved by the caller (same
	// namespace, Ready); drivers locate its data by its UID, never by its name.
	Source *apps.VMDisk
	// ResolveSource, when set and Source is nil, resolves Source for Ensure, only when the disk
	// must be created: a clone that exists no longer depends on its source.
	ResolveSource func(ctx context.Context) (*apps.VMDisk, error)
	Key           Key
	// Progress receives an import's progress (may be nil).
	Progress Progress
}

// Driver prepares the disks of one storage class on this node.
type Driver interface {
	Info() Info
	// Open returns how to open a disk that exists, growing it to spec.storage when that grew.
	// The error wraps ErrNotFound only when the disk's data is known to be absent.
	Open(ctx context.Context, d *apps.VMDisk, key Key) (Volume, error)
	// Create makes the disk — importing its source, encrypted with the tenant's key — and
	// returns how to open it. It never replaces existing data (the error wraps ErrExists) and on
	// failure removes only what it made itself.
	Create(ctx context.Context, req Request) (Volume, error)
	// Delete removes the data stored under an ObjectName; data that does not exist is not an error.
	Delete(ctx context.Context, namespace, object string) error
	// List returns the ObjectNames stored, by namespace, for garbage collection.
	List(ctx context.Context) (map[string][]string, error)
}

// Ensure opens a disk, creating it when it is known to be absent. When another actor created
// it in between, the disk it made is opened. Any other failure to look is returned as it is:
// an unknown state never leads to creating (or removing) anything.
func Ensure(ctx context.Context, drv Driver, req Request) (Volume, error) {
	vol, err := drv.Open(ctx, req.Disk, req.Key)
	if err == nil || !errors.Is(err, ErrNotFound) {
		return vol, err
	}
	if req.Source == nil && req.ResolveSource != nil && req.Disk.Spec.Source.Disk != nil {
		if req.Source, err = req.ResolveSource(ctx); err != nil {
			return Volume{}, err
		}
	}
	vol, err = drv.Create(ctx, req)
	if errors.Is(err, ErrExists) {
		return drv.Open(ctx, req.Disk, req.Key)
	}
	return vol, err
}

// GoldenImage is a golden image's content as this node holds it.
type GoldenImage struct {
	Name string
	// Path is the node's qcow2 file of the content.
	Path string
	// ID names the content: a prefix of the GoldenImage's UID, or, for an image only the
	// node's images directory provides, "f" and a prefix of the file's SHA-256. Copies made
	// from the image (Ceph bases) are keyed by it, so content imported again under the same
	// name never finds copies of the old content.
	ID string
	// Managed: the file is Kumo's copy of a GoldenImage object, removed once the object is
	// deleted or imported again; whatever must outlive it (a disk's backing file) takes its
	// own link to it. Otherwise it is the node operator's file, which Kumo never removes.
	Managed bool
}

// GoldenImages finds the golden images this node holds.
type GoldenImages interface {
	// Golden returns the node's copy of a golden image's current content; ok is false when the
	// node has none (not cached yet, or no such image).
	Golden(name string) (img GoldenImage, ok bool)
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
