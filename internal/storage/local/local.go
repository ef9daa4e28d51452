// Package local stores VM disks as qcow2 files on the node, each encrypted with its tenant's key
// (qcow2's built-in LUKS). A disk from a golden image is a copy-on-write overlay on the node's
// cached image (the image is public; everything the tenant writes is encrypted); an imported
// disk is converted from its downloaded, inspected source; a blank disk is empty. A local disk
// lives on the node where it was created, and its VM runs there.
package local

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"

	"kumo.dev/kumo/internal/storage"
	"kumo.dev/kumo/internal/storage/importer"
	apps "kumo.dev/kumo/pkg/apis/apps/v1alpha1"
)

// luksIterTimeMS keeps the key derivation cheap: the passphrase is 32 random bytes, so slowing
// down guessing adds nothing, while every open pays for it.
const luksIterTimeMS = 10

// Driver keeps disks under Dir; golden images are ImagesDir/<name>.qcow2.
type Driver struct {
	Dir       string
	ImagesDir string
	// Uploads fetches uploaded content (nil: uploads are not available).
	Uploads storage.Uploads
}

var _ storage.Driver = &Driver{}

// Info implements storage.Driver.
func (d *Driver) Info() storage.Info {
	return storage.Info{Name: string(apps.StorageLocal), Shared: false, Snapshots: true, Clones: true, OnlineResize: true}
}

// Path is where a disk's file lives.
func (d *Driver) Path(disk *apps.VMDisk) string {
	return filepath.Join(d.Dir, disk.Namespace, storage.ObjectName(disk)+".qcow2")
}

// ImagePath is where a golden image is cached on this node.
func (d *Driver) ImagePath(image string) string { return filepath.Join(d.ImagesDir, image+".qcow2") }

// Images lists the golden images cached on this node.
func (d *Driver) Images() []string {
	entries, _ := os.ReadDir(d.ImagesDir)
	var out []string
	for _, e := range entries {
		if name, ok := strings.CutSuffix(e.Name(), ".qcow2"); ok && !e.IsDir() {
			out = append(out, name)
		}
	}
	return out
}

// Ensure implements storage.Driver.
func (d *Driver) Ensure(ctx context.Context, disk *apps.VMDisk, key storage.Key, progress storage.Progress) (storage.Volume, error) {
	path := d.Path(disk)
	vol := storage.Volume{Driver: "file", Path: path, Format: "qcow2", KeyFile: key.File}
	if _, err := os.Stat(vol.Path); err == nil {
		size, err := virtualSize(ctx, vol.Path)
		if err == nil && !disk.Spec.Optical && size < disk.Spec.Storage.Value() {
			// spec.storage grew while the disk was not in use: grow it now.
			size = disk.Spec.Storage.Value()
			err = run(ctx, "qemu-img", "resize", "-q", "--object", "secret,id=s,file="+key.File, "--image-opts",
				"driver=qcow2,file.filename="+escape(vol.Path)+",encrypt.key-secret=s", strconv.FormatInt(size, 10))
		}
		vol.SizeBytes = size
		return vol, err
	}
	if key.File == "" {
		return storage.Volume{}, errors.New("no tenant key: local disks are always encrypted")
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return storage.Volume{}, err
	}
	tmp := vol.Path + ".creating"
	defer os.Remove(tmp)
	want := disk.Spec.Storage.Value()
	var err error
	switch src := disk.Spec.Source; {
	case src.Image != nil:
		err = d.fromImage(ctx, disk, tmp, key, &want)
	case src.HTTP != nil:
		err = d.fromSource(ctx, disk, tmp, key, &want, progress, importer.URL(src.HTTP.URL))
	case src.Disk != nil:
		err = d.fromDisk(ctx, disk, tmp, key, want)
	case src.Upload != nil && d.Uploads != nil:
		err = d.fromSource(ctx, disk, tmp, key, &want, progress, func(ctx context.Context, dst string, p importer.Progress) error {
			return d.Uploads(ctx, disk.Namespace, disk.Name, dst, p)
		})
	case src.Upload != nil:
		err = fmt.Errorf("this node cannot fetch uploads")
	case disk.Spec.Optical:
		err = errors.New("an optical disk needs a source (http, image or upload)")
	default:
		err = d.newEncrypted(ctx, disk.Namespace, tmp, key, want, "")
	}
	if err != nil {
		return storage.Volume{}, err
	}
	if err := os.Chmod(tmp, 0o600); err != nil {
		return storage.Volume{}, err
	}
	if err := os.Rename(tmp, vol.Path); err != nil {
		return storage.Volume{}, err
	}
	vol.SizeBytes = want
	return vol, nil
}

func (d *Driver) fromImage(ctx context.Context, disk *apps.VMDisk, tmp string, key storage.Key, want *int64) error {
	name := disk.Spec.Source.Image.Name
	image := d.ImagePath(name)
	if _, err := os.Stat(image); err != nil {
		return fmt.Errorf("golden image %s is not on this node (%s)", name, image)
	}
	imageSize, err := virtualSize(ctx, image)
	if err != nil {
		return err
	}
	if disk.Spec.Optical {
		*want = imageSize
		if err := d.newEncrypted(ctx, disk.Namespace, tmp, key, imageSize, ""); err != nil {
			return err
		}
		return importer.Convert(ctx, image, importer.Info{Format: "qcow2", VirtualSize: imageSize}, encryptedTarget(tmp, key), nil)
	}
	if imageSize > *want {
		return &importer.RefusedError{Reason: fmt.Sprintf("golden image %s is %s, larger than spec.storage %s", name, importer.HumanBytes(imageSize), disk.Spec.Storage.String())}
	}
	return d.newEncrypted(ctx, disk.Namespace, tmp, key, *want, image)
}

func (d *Driver) fromSource(ctx context.Context, disk *apps.VMDisk, tmp string, key storage.Key, want *int64, progress storage.Progress, fetch importer.Fetcher) error {
	dl := tmp + ".download"
	defer os.Remove(dl)
	report := func(p int) {
		if progress != nil {
			progress(p)
		}
	}
	info, err := importer.Fetch(ctx, fetch, dl, report)
	if err != nil {
		return err
	}
	if disk.Spec.Optical {
		*want = info.VirtualSize
	} else if info.VirtualSize > *want {
		return &importer.RefusedError{Reason: fmt.Sprintf("the image is %s, larger than spec.storage %s", importer.HumanBytes(info.VirtualSize), disk.Spec.Storage.String())}
	}
	if err := d.newEncrypted(ctx, disk.Namespace, tmp, key, *want, ""); err != nil {
		return err
	}
	return importer.Convert(ctx, dl, info, encryptedTarget(tmp, key), func(p int) { report(50 + p/2) })
}

// fromDisk clones another local disk of the same tenant (same key) on this node.
func (d *Driver) fromDisk(ctx context.Context, disk *apps.VMDisk, tmp string, key storage.Key, want int64) error {
	matches, _ := filepath.Glob(filepath.Join(d.Dir, disk.Namespace, disk.Spec.Source.Disk.Name+".*.qcow2"))
	if len(matches) != 1 {
		return fmt.Errorf("disk %s to clone is not on this node", disk.Spec.Source.Disk.Name)
	}
	src := matches[0]
	srcSize, err := virtualSize(ctx, src)
	if err != nil {
		return err
	}
	if srcSize > want {
		return &importer.RefusedError{Reason: fmt.Sprintf("disk %s is %s, larger than spec.storage %s", disk.Spec.Source.Disk.Name, importer.HumanBytes(srcSize), disk.Spec.Storage.String())}
	}
	if err := d.newEncrypted(ctx, disk.Namespace, tmp, key, want, ""); err != nil {
		return err
	}
	t := encryptedTarget(tmp, key)
	args := append([]string{"convert", "-q", "--object", "secret,id=srcsec,file=" + key.File, "--image-opts",
		"driver=qcow2,file.filename=" + escape(src) + ",encrypt.key-secret=srcsec"}, t.Args...)
	for _, o := range t.Objects {
		args = append(args, "--object", o)
	}
	return run(ctx, "qemu-img", args...)
}

// newEncrypted makes path an empty encrypted qcow2 of size bytes (on a backing golden image when
// given) from the tenant's template on this node: creating a LUKS header costs seconds of QEMU's
// key-derivation timing, copying one and resizing costs milliseconds. A tenant's local disks on
// a node share the template's master key; tenants never share one.
func (d *Driver) newEncrypted(ctx context.Context, namespace, path string, key storage.Key, size int64, backing string) error {
	tpl, err := d.template(ctx, namespace, key)
	if err != nil {
		return err
	}
	if err := copyFile(tpl, path); err != nil {
		return fmt.Errorf("copy the tenant's template: %w", err)
	}
	opts := "driver=qcow2,file.filename=" + escape(path) + ",encrypt.key-secret=s"
	if err := run(ctx, "qemu-img", "resize", "-q", "--object", "secret,id=s,file="+key.File, "--image-opts", opts, strconv.FormatInt(size, 10)); err != nil {
		return err
	}
	if backing != "" {
		return run(ctx, "qemu-img", "rebase", "-q", "-u", "--object", "secret,id=s,file="+key.File, "-F", "qcow2", "-b", backing, "--image-opts", opts)
	}
	return nil
}

// templatePrefix starts the names of tenants' templates: a leading "." never starts a disk's
// name, so List and garbage collection leave templates alone.
const templatePrefix = ".template-"

// template returns the tenant's empty (zero-size) encrypted qcow2 on this node, made once per
// key: a tenant created again under the same name, with a new key, gets a new one.
func (d *Driver) template(ctx context.Context, namespace string, key storage.Key) (string, error) {
	keyData, err := os.ReadFile(key.File)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(keyData)
	path := filepath.Join(d.Dir, namespace, templatePrefix+hex.EncodeToString(sum[:4])+".qcow2")
	if _, err := os.Stat(path); err == nil {
		return path, nil
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), templatePrefix+"*.creating")
	if err != nil {
		return "", err
	}
	tmp.Close()
	defer os.Remove(tmp.Name())
	if err := createEncrypted(ctx, tmp.Name(), key, 0); err != nil {
		return "", err
	}
	return path, os.Rename(tmp.Name(), path)
}

// createEncrypted makes an empty encrypted qcow2.
func createEncrypted(ctx context.Context, path string, key storage.Key, size int64) error {
	args := []string{"create", "-q", "-f", "qcow2", "--object", "secret,id=sec0,file=" + key.File,
		"-o", "encrypt.format=luks,encrypt.key-secret=sec0,encrypt.iter-time=" + strconv.Itoa(luksIterTimeMS), path, strconv.FormatInt(size, 10)}
	// QEMU times its key derivation on the CPU clock and now and then, on a loaded machine, gives
	// up on the measurement; that failure is transient.
	var err error
	for attempt := 0; attempt < pbkdfAttempts; attempt++ {
		if err = run(ctx, "qemu-img", args...); err == nil || !strings.Contains(err.Error(), "accurate CPU usage") {
			return err
		}
		os.Remove(path)
	}
	return err
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// pbkdfAttempts bounds retries of QEMU's key-derivation timing.
const pbkdfAttempts = 5

// encryptedTarget converts into an existing encrypted qcow2.
func encryptedTarget(path string, key storage.Key) importer.Target {
	return importer.Target{
		Objects: []string{"secret,id=dstsec,file=" + key.File},
		Args:    []string{"-n", "--target-image-opts", "driver=qcow2,file.filename=" + escape(path) + ",encrypt.key-secret=dstsec"},
	}
}

// Delete implements storage.Driver.
func (d *Driver) Delete(_ context.Context, namespace, object string) error {
	base := filepath.Join(d.Dir, namespace, object)
	if err := os.Remove(base + ".qcow2"); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// List implements storage.Driver.
func (d *Driver) List(context.Context) (map[string][]string, error) {
	out := map[string][]string{}
	nss, err := os.ReadDir(d.Dir)
	if errors.Is(err, os.ErrNotExist) {
		return out, nil
	}
	for _, ns := range nss {
		files, _ := os.ReadDir(filepath.Join(d.Dir, ns.Name()))
		for _, f := range files {
			if obj, ok := strings.CutSuffix(f.Name(), ".qcow2"); ok && !strings.HasPrefix(obj, ".") {
				out[ns.Name()] = append(out[ns.Name()], obj)
			}
		}
	}
	return out, err
}

func virtualSize(ctx context.Context, path string) (int64, error) {
	out, err := exec.CommandContext(ctx, "qemu-img", "info", "--output=json", "-U", path).Output()
	if err != nil {
		return 0, fmt.Errorf("qemu-img info %s: %w", path, err)
	}
	var info struct {
		VirtualSize int64 `json:"virtual-size"`
	}
	if err := json.Unmarshal(out, &info); err != nil {
		return 0, fmt.Errorf("qemu-img info %s: %w", path, err)
	}
	return info.VirtualSize, nil
}

func run(ctx context.Context, name string, args ...string) error {
	if out, err := exec.CommandContext(ctx, name, args...).CombinedOutput(); err != nil {
		return fmt.Errorf("%s %s: %v: %s", name, args[0], err, strings.TrimSpace(string(out)))
	}
	return nil
}

func escape(s string) string { return strings.ReplaceAll(s, ",", ",,") }
