// Package ceph stores replicated disks as Ceph RBD images, opened by QEMU's own librbd driver
// (no data path of Kumo's). Each tenant's disks live in the tenant's RADOS namespace, each image
// is LUKS2-formatted with the tenant's key, and the pool's CRUSH rule keeps one replica per
// datacenter. A disk made from a golden image is a copy-on-write clone of the tenant's encrypted
// copy of that image (see golden.go).
package ceph

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"

	"kumo.dev/kumo/internal/storage"
	"kumo.dev/kumo/internal/storage/importer"
	apps "kumo.dev/kumo/pkg/apis/apps/v1alpha1"
)

// luksHeader is what LUKS2 takes from an RBD image: the guest sees the image minus this.
const luksHeader = 16 << 20

// Driver reaches one pool of a Ceph cluster as one cephx user.
type Driver struct {
	Conf, User, Pool string
	// ImagesDir holds the node's golden images (<name>.qcow2) to copy from.
	ImagesDir string
	// ScratchDir holds downloads while they are inspected.
	ScratchDir string
	// Uploads fetches uploaded content (nil: uploads are not available).
	Uploads storage.Uploads
	// GoldenID names the current import of a golden image (a prefix of its UID; "" when the
	// image does not exist). Tenant copies of golden images are keyed by it.
	GoldenID func(image string) string
}

var _ storage.Driver = &Driver{}

// Info implements storage.Driver.
func (d *Driver) Info() storage.Info {
	return storage.Info{Name: string(apps.StorageReplicated), Shared: true, Snapshots: true, Clones: true, OnlineResize: true}
}

func (d *Driver) image(disk *apps.VMDisk) *storage.RBDImage {
	return &storage.RBDImage{Pool: d.Pool, Namespace: disk.Namespace, Image: storage.ObjectName(disk), Conf: d.Conf, User: d.User}
}

func spec(i *storage.RBDImage) string { return i.Pool + "/" + i.Namespace + "/" + i.Image }

// Ensure implements storage.Driver.
func (d *Driver) Ensure(ctx context.Context, disk *apps.VMDisk, key storage.Key, progress storage.Progress) (storage.Volume, error) {
	if key.File == "" {
		return storage.Volume{}, errors.New("no tenant key: replicated disks are always encrypted")
	}
	img := d.image(disk)
	vol := storage.Volume{Driver: "rbd", Path: spec(img), Format: "raw", KeyFile: key.File, RBD: img, SizeBytes: disk.Spec.Storage.Value()}
	if raw, err := d.rawSize(ctx, spec(img)); err == nil {
		if disk.Spec.Optical {
			vol.SizeBytes = raw - luksHeader
			return vol, nil
		}
		// Grow to spec.storage if it grew while the disk was not in use. The size is set on the
		// raw image: Ceph 16.2's resize through the crypto layer ignores the LUKS header.
		if raw-luksHeader < vol.SizeBytes {
			if _, err := d.rbd(ctx, "resize", "--no-progress", "--size", mib(vol.SizeBytes+luksHeader), spec(img)); err != nil {
				return storage.Volume{}, fmt.Errorf("grow %s: %w", spec(img), err)
			}
		}
		return vol, nil
	}
	if _, err := d.rbd(ctx, "namespace", "create", img.Pool+"/"+img.Namespace); err != nil && !strings.Contains(err.Error(), "exists") {
		return storage.Volume{}, fmt.Errorf("RADOS namespace of %s: %w", disk.Namespace, err)
	}
	var err error
	if src := disk.Spec.Source; src.Image != nil && !disk.Spec.Optical {
		err = d.cloneBase(ctx, disk, img, key, src.Image.Name, disk.Spec.Storage.Value())
	} else {
		vol.SizeBytes, err = d.copyIn(ctx, disk, img, key, progress)
	}
	if err != nil {
		if _, rmErr := d.rbd(context.Background(), "rm", spec(img)); rmErr != nil && !strings.Contains(rmErr.Error(), "No such file") {
			err = fmt.Errorf("%w (and removing the half-made image failed: %v)", err, rmErr)
		}
		return storage.Volume{}, err
	}
	return vol, nil
}

// source is what a new image is filled from: a file on the node (inspected) or another
// encrypted image of the tenant.
type source struct {
	file  string
	info  importer.Info
	image *storage.RBDImage
	size  int64 // virtual size of the content
}

// copyIn creates the image as a clone of the tenant's blank base (encrypted with the tenant's
// key) and copies its source in. It returns the disk's size: spec.storage, or the content's size
// for optical media.
func (d *Driver) copyIn(ctx context.Context, disk *apps.VMDisk, img *storage.RBDImage, key storage.Key, progress storage.Progress) (int64, error) {
	report := func(p int) {
		if progress != nil {
			progress(p)
		}
	}
	want := disk.Spec.Storage.Value()
	// The image's size is known up front unless the disk is optical: make it (the first disk of
	// a tenant formats the blank base, seconds of LUKS2 key derivation) while the source downloads.
	var created chan error
	if !disk.Spec.Optical {
		created = make(chan error, 1)
		go func() { created <- d.cloneBase(ctx, disk, img, key, "", want) }()
	}
	src, cleanup, err := d.fetch(ctx, disk, report)
	defer cleanup()
	if created != nil {
		if cerr := <-created; err == nil {
			err = cerr
		}
	}
	if err != nil {
		return 0, err
	}
	if disk.Spec.Optical {
		if src.size == 0 {
			return 0, errors.New("an optical disk needs a source (http, image or upload)")
		}
		want = (src.size + 1<<20 - 1) &^ (1<<20 - 1) // RBD sizes are whole MiB: the medium ends in zeros
	} else if src.size > want {
		return 0, &importer.RefusedError{Reason: fmt.Sprintf("the source is %s, larger than spec.storage %s", importer.HumanBytes(src.size), disk.Spec.Storage.String())}
	}
	if created == nil {
		if err := d.cloneBase(ctx, disk, img, key, "", want); err != nil {
			return 0, err
		}
	}
	target := d.target(img, key, "dst")
	switch {
	case src.file != "":
		return want, importer.Convert(ctx, src.file, src.info, target, func(p int) { report(50 + p/2) })
	case src.image != nil:
		args := append([]string{"convert", "-q", "-n", "--object", "secret,id=src,file=" + key.File, "--image-opts", d.opts(src.image, "src")}, target.Args...)
		for _, o := range target.Objects {
			args = append(args, "--object", o)
		}
		if out, err := exec.CommandContext(ctx, "qemu-img", args...).CombinedOutput(); err != nil {
			return 0, fmt.Errorf("clone %s: %v: %s", disk.Spec.Source.Disk.Name, err, strings.TrimSpace(string(out)))
		}
	}
	return want, nil
}

// fetch finds, downloads and inspects a disk's source. A blank disk has none (zero size).
func (d *Driver) fetch(ctx context.Context, disk *apps.VMDisk, report func(int)) (source, func(), error) {
	nothing := func() {}
	switch src := disk.Spec.Source; {
	case src.Image != nil:
		gs, err := d.goldenSource(ctx, src.Image.Name)
		return gs, nothing, err
	case src.HTTP != nil || (src.Upload != nil && d.Uploads != nil):
		var fetch importer.Fetcher = func(ctx context.Context, dst string, p importer.Progress) error {
			return d.Uploads(ctx, disk.Namespace, disk.Name, dst, p)
		}
		if src.HTTP != nil {
			fetch = importer.URL(src.HTTP.URL)
		}
		if err := os.MkdirAll(d.ScratchDir, 0o700); err != nil {
			return source{}, nothing, err
		}
		dl := filepath.Join(d.ScratchDir, disk.Namespace+"_"+disk.Name+".download")
		cleanup := func() { os.Remove(dl) }
		info, err := importer.Fetch(ctx, fetch, dl, report)
		if err != nil {
			return source{}, cleanup, err
		}
		return source{file: dl, info: info, size: info.VirtualSize}, cleanup, nil
	case src.Disk != nil:
		objects, err := d.List(ctx)
		if err != nil {
			return source{}, nothing, err
		}
		var found []string
		for _, o := range objects[disk.Namespace] {
			if name, _, ok := storage.ParseObjectName(o); ok && name == src.Disk.Name {
				found = append(found, o)
			}
		}
		if len(found) != 1 {
			return source{}, nothing, fmt.Errorf("disk %s to clone has no single replicated image (found %d)", src.Disk.Name, len(found))
		}
		from := &storage.RBDImage{Pool: d.Pool, Namespace: disk.Namespace, Image: found[0], Conf: d.Conf, User: d.User}
		raw, err := d.rawSize(ctx, spec(from))
		if err != nil {
			return source{}, nothing, err
		}
		return source{image: from, size: raw - luksHeader}, nothing, nil
	case src.Upload != nil:
		return source{}, nothing, errors.New("this node cannot fetch uploads")
	}
	return source{}, nothing, nil
}

// goldenSource is the node's cached copy of a golden image, inspected.
func (d *Driver) goldenSource(ctx context.Context, name string) (source, error) {
	golden := filepath.Join(d.ImagesDir, name+".qcow2")
	info, err := importer.Inspect(ctx, golden)
	if err != nil {
		return source{}, fmt.Errorf("golden image %s: %w", name, err)
	}
	return source{file: golden, info: info, size: info.VirtualSize}, nil
}

// createEncrypted creates an image whose encrypted payload holds size bytes, LUKS2-formatted
// with the tenant's key.
func (d *Driver) createEncrypted(ctx context.Context, img *storage.RBDImage, key storage.Key, size int64) error {
	if _, err := d.rbd(ctx, "create", "--size", mib(size+luksHeader), spec(img)); err != nil {
		return fmt.Errorf("create RBD image %s: %w", spec(img), err)
	}
	if _, err := d.rbd(ctx, "encryption", "format", spec(img), "luks2", key.File); err != nil {
		return fmt.Errorf("LUKS2-format %s: %w", spec(img), err)
	}
	return nil
}

// mib is a size for rbd's --size, rounded up to whole MiB.
func mib(bytes int64) string { return strconv.FormatInt((bytes+(1<<20-1))>>20, 10) + "M" }

// rawSize is an image's size in bytes (LUKS header included).
func (d *Driver) rawSize(ctx context.Context, image string) (int64, error) {
	out, err := d.rbd(ctx, "info", "--format", "json", image)
	if err != nil {
		return 0, err
	}
	var info struct {
		Size int64 `json:"size"`
	}
	if err := json.Unmarshal([]byte(out), &info); err != nil {
		return 0, fmt.Errorf("rbd info %s: %w", image, err)
	}
	return info.Size, nil
}

// opts are QEMU's options for an encrypted RBD image.
func (d *Driver) opts(img *storage.RBDImage, secret string) string {
	return fmt.Sprintf("driver=rbd,pool=%s,namespace=%s,image=%s,conf=%s,user=%s,encrypt.format=luks2,encrypt.key-secret=%s",
		img.Pool, img.Namespace, img.Image, img.Conf, img.User, secret)
}

func (d *Driver) target(img *storage.RBDImage, key storage.Key, secret string) importer.Target {
	return importer.Target{Objects: []string{"secret,id=" + secret + ",file=" + key.File}, Args: []string{"-n", "--target-image-opts", d.opts(img, secret)}}
}

// Delete implements storage.Driver.
func (d *Driver) Delete(ctx context.Context, namespace, object string) error {
	if _, err := d.rbd(ctx, "rm", d.Pool+"/"+namespace+"/"+object); err != nil && !strings.Contains(err.Error(), "No such file") {
		return err
	}
	return nil
}

// List implements storage.Driver: the disk images of every tenant namespace of the pool (not
// the golden bases).
func (d *Driver) List(ctx context.Context) (map[string][]string, error) {
	all, err := d.images(ctx)
	if err != nil {
		return nil, err
	}
	out := map[string][]string{}
	for ns, images := range all {
		for _, image := range images {
			if !isBase(image) {
				out[ns] = append(out[ns], image)
			}
		}
	}
	return out, nil
}

// images lists every image of every tenant namespace of the pool.
func (d *Driver) images(ctx context.Context) (map[string][]string, error) {
	out := map[string][]string{}
	nsOut, err := d.rbd(ctx, "namespace", "ls", d.Pool, "--format", "json")
	if err != nil {
		return nil, err
	}
	var nss []struct {
		Name string `json:"name"`
	}
	if err := json.Unmarshal([]byte(nsOut), &nss); err != nil {
		return nil, fmt.Errorf("rbd namespace ls: %w", err)
	}
	for _, ns := range nss {
		ls, err := d.rbd(ctx, "ls", "--namespace", ns.Name, d.Pool, "--format", "json")
		if err != nil {
			return nil, err
		}
		var images []string
		if err := json.Unmarshal([]byte(ls), &images); err != nil {
			return nil, fmt.Errorf("rbd ls: %w", err)
		}
		out[ns.Name] = images
	}
	return out, nil
}

func (d *Driver) rbd(ctx context.Context, args ...string) (string, error) {
	full := append([]string{"-c", d.Conf, "--id", d.User}, args...)
	out, err := exec.CommandContext(ctx, "rbd", full...).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("rbd %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}
