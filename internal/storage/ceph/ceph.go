// Package ceph stores replicated disks as Ceph RBD images, opened by QEMU's own librbd driver
// (no data path of Kumo's). Each tenant's disks live in the tenant's RADOS namespace, each image
// is LUKS2-formatted with the tenant's key, and the pool's CRUSH rule keeps one replica per
// datacenter. Debian's Ceph 16.2 cannot encrypt a clone, so a disk made from a golden image is
// an encrypted copy of it.
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
	if disk.Spec.Optical {
		return storage.Volume{}, errors.New("optical disks are not supported on the replicated class yet; use storageClass local")
	}
	img := d.image(disk)
	vol := storage.Volume{Driver: "rbd", Path: spec(img), Format: "raw", KeyFile: key.File, RBD: img, SizeBytes: disk.Spec.Storage.Value()}
	if _, err := d.rbd(ctx, "info", spec(img)); err == nil {
		// Grow to spec.storage if it grew while the disk was not in use (no-op otherwise).
		out, err := exec.CommandContext(ctx, "qemu-img", "resize", "-q", "--object", "secret,id=s,file="+key.File,
			"--image-opts", d.opts(img, "s"), strconv.FormatInt(vol.SizeBytes, 10)).CombinedOutput()
		if err != nil && !strings.Contains(string(out), "shrink") {
			return storage.Volume{}, fmt.Errorf("grow %s: %v: %s", spec(img), err, strings.TrimSpace(string(out)))
		}
		return vol, nil
	}
	if _, err := d.rbd(ctx, "namespace", "create", img.Pool+"/"+img.Namespace); err != nil && !strings.Contains(err.Error(), "exists") {
		return storage.Volume{}, fmt.Errorf("RADOS namespace of %s: %w", disk.Namespace, err)
	}
	want := disk.Spec.Storage.Value()
	mib := (want + luksHeader + (1<<20 - 1)) >> 20
	if _, err := d.rbd(ctx, "create", "--size", strconv.FormatInt(mib, 10)+"M", spec(img)); err != nil {
		return storage.Volume{}, fmt.Errorf("create RBD image %s: %w", spec(img), err)
	}
	if err := d.fill(ctx, disk, img, key, want, progress); err != nil {
		if _, rmErr := d.rbd(context.Background(), "rm", spec(img)); rmErr != nil {
			err = fmt.Errorf("%w (and removing the half-made image failed: %v)", err, rmErr)
		}
		return storage.Volume{}, err
	}
	return vol, nil
}

// fill encrypts the new image with the tenant's key and writes its content.
func (d *Driver) fill(ctx context.Context, disk *apps.VMDisk, img *storage.RBDImage, key storage.Key, want int64, progress storage.Progress) error {
	if _, err := d.rbd(ctx, "encryption", "format", spec(img), "luks2", key.File); err != nil {
		return fmt.Errorf("LUKS2-format %s: %w", spec(img), err)
	}
	report := func(p int) {
		if progress != nil {
			progress(p)
		}
	}
	target := d.target(img, key, "dst")
	switch src := disk.Spec.Source; {
	case src.Image != nil:
		golden := filepath.Join(d.ImagesDir, src.Image.Name+".qcow2")
		info, err := importer.Inspect(ctx, golden)
		if err != nil {
			return fmt.Errorf("golden image %s: %w", src.Image.Name, err)
		}
		if info.VirtualSize > want {
			return &importer.RefusedError{Reason: fmt.Sprintf("golden image %s is larger than spec.storage %s", src.Image.Name, disk.Spec.Storage.String())}
		}
		return importer.Convert(ctx, golden, info, target, report)
	case src.HTTP != nil || (src.Upload != nil && d.Uploads != nil):
		var fetch importer.Fetcher = func(ctx context.Context, dst string, p importer.Progress) error {
			return d.Uploads(ctx, disk.Namespace, disk.Name, dst, p)
		}
		if src.HTTP != nil {
			fetch = importer.URL(src.HTTP.URL)
		}
		if err := os.MkdirAll(d.ScratchDir, 0o700); err != nil {
			return err
		}
		dl := filepath.Join(d.ScratchDir, disk.Namespace+"_"+disk.Name+".download")
		defer os.Remove(dl)
		info, err := importer.Fetch(ctx, fetch, dl, report)
		if err != nil {
			return err
		}
		if info.VirtualSize > want {
			return &importer.RefusedError{Reason: fmt.Sprintf("the image is larger than spec.storage %s", disk.Spec.Storage.String())}
		}
		return importer.Convert(ctx, dl, info, target, func(p int) { report(50 + p/2) })
	case src.Disk != nil:
		objects, err := d.List(ctx)
		if err != nil {
			return err
		}
		var found []string
		for _, o := range objects[disk.Namespace] {
			if name, _, ok := storage.ParseObjectName(o); ok && name == src.Disk.Name {
				found = append(found, o)
			}
		}
		if len(found) != 1 {
			return fmt.Errorf("disk %s to clone has no single replicated image (found %d)", src.Disk.Name, len(found))
		}
		from := &storage.RBDImage{Pool: d.Pool, Namespace: disk.Namespace, Image: found[0], Conf: d.Conf, User: d.User}
		args := append([]string{"convert", "-q", "-n", "--object", "secret,id=src,file=" + key.File, "--image-opts", d.opts(from, "src")}, target.Args...)
		for _, o := range target.Objects {
			args = append(args, "--object", o)
		}
		if out, err := exec.CommandContext(ctx, "qemu-img", args...).CombinedOutput(); err != nil {
			return fmt.Errorf("clone %s: %v: %s", src.Disk.Name, err, strings.TrimSpace(string(out)))
		}
	case src.Upload != nil:
		return errors.New("this node cannot fetch uploads")
	}
	return nil
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

// List implements storage.Driver: the images of every tenant namespace of the pool.
func (d *Driver) List(ctx context.Context) (map[string][]string, error) {
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
