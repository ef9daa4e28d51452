// Package local stores VM disks as qcow2 files on the node, each encrypted with its tenant's key
// (qcow2's built-in LUKS). A disk from a golden image is a copy-on-write overlay on the node's
// cached image (the image is public; everything the tenant writes is encrypted); an imported
// disk is converted from its downloaded, inspected source; a blank disk is empty. A local disk
// lives on the node where it was created, and its VM runs there.
package local

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"kumo.dev/kumo/internal/storage"
	"kumo.dev/kumo/internal/storage/importer"
	apps "kumo.dev/kumo/pkg/apis/apps/v1alpha1"
)

// luksIterTimeMS keeps the key derivation cheap: the passphrase is 32 random bytes, so slowing
// down guessing adds nothing, while every open pays for it.
const luksIterTimeMS = 10

// Driver keeps disks under Dir.
type Driver struct {
	Dir string
	// Golden finds the node's golden images (nil: none).
	Golden storage.GoldenImages
	// Uploads fetches uploaded content (nil: uploads are not available).
	Uploads storage.Uploads
	// Networks are the addresses http imports may connect to (zero: no internal address).
	Networks importer.Networks

	// basesMu keeps pruning of unused backing files out of the window between a disk's backing
	// file being linked and the disk being put in place.
	basesMu sync.RWMutex
}

var _ storage.Driver = &Driver{}

// statFile is os.Stat; tests inject failures.
var statFile = os.Stat

const (
	// scratchPrefix starts the scratch directory of a disk being made (in its namespace's
	// directory): "." never starts a disk's name, so List leaves them alone.
	scratchPrefix = ".creating-"
	// basesDir holds the backing files of disks made from golden images copied by Kumo, as
	// hard links to the node's copy: the copy may be removed when its image is imported
	// again, the disks made from it keep their content.
	basesDir = ".bases"
)

// Info implements storage.Driver.
func (d *Driver) Info() storage.Info {
	return storage.Info{Name: string(apps.StorageLocal), Shared: false, Snapshots: true, Clones: true, OnlineResize: true}
}

// Path is where a disk's file lives.
func (d *Driver) Path(disk *apps.VMDisk) string {
	return filepath.Join(d.Dir, disk.Namespace, storage.ObjectName(disk)+".qcow2")
}

// Images lists the golden images this node can make disks from.
func (d *Driver) Images() []string {
	if n, ok := d.Golden.(interface{ Names() []string }); ok {
		return n.Names()
	}
	return nil
}

// Open implements storage.Driver.
func (d *Driver) Open(ctx context.Context, disk *apps.VMDisk, key storage.Key) (storage.Volume, error) {
	path := d.Path(disk)
	vol := storage.Volume{Driver: "file", Path: path, Format: "qcow2", KeyFile: key.File}
	if _, err := statFile(path); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return storage.Volume{}, fmt.Errorf("local disk %s/%s (%s): %w", disk.Namespace, disk.Name, path, storage.ErrNotFound)
		}
		return storage.Volume{}, fmt.Errorf("look for local disk %s/%s: %w", disk.Namespace, disk.Name, err)
	}
	size, err := virtualSize(ctx, path)
	if err == nil && !disk.Spec.Optical && size < disk.Spec.Storage.Value() {
		// spec.storage grew while the disk was not in use: grow it now.
		size = disk.Spec.Storage.Value()
		err = run(ctx, "qemu-img", "resize", "-q", "--object", "secret,id=s,file="+key.File, "--image-opts",
			"driver=qcow2,file.filename="+escape(path)+",encrypt.key-secret=s", strconv.FormatInt(size, 10))
	}
	if err != nil {
		return storage.Volume{}, fmt.Errorf("open local disk %s/%s: %w", disk.Namespace, disk.Name, err)
	}
	vol.SizeBytes = size
	return vol, nil
}

// Create implements storage.Driver. The disk is built in a private scratch directory and put in
// place with a hard link, which fails when a file exists there: an existing disk is never
// replaced, and a failure leaves nothing but the scratch directory, which is removed.
func (d *Driver) Create(ctx context.Context, req storage.Request) (storage.Volume, error) {
	disk, key := req.Disk, req.Key
	if key.File == "" {
		return storage.Volume{}, errors.New("no tenant key: local disks are always encrypted")
	}
	path := d.Path(disk)
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return storage.Volume{}, err
	}
	if n, err := storage.SweepScratch(dir, scratchPrefix); err != nil {
		slog.Warn("remove what crashed disk creations left", "dir", dir, "err", err)
	} else if n > 0 {
		slog.Info("removed what crashed disk creations left", "dir", dir, "count", n)
	}
	// Look first so that an existing disk costs no download; the link below is what guarantees
	// nothing is replaced.
	if _, err := statFile(path); err == nil {
		return storage.Volume{}, fmt.Errorf("local disk %s/%s (%s): %w", disk.Namespace, disk.Name, path, storage.ErrExists)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return storage.Volume{}, fmt.Errorf("look for local disk %s/%s: %w", disk.Namespace, disk.Name, err)
	}
	s, err := storage.NewScratch(dir, scratchPrefix)
	if err != nil {
		return storage.Volume{}, err
	}
	defer s.Close()
	tmp := s.Path("disk.qcow2")
	want := disk.Spec.Storage.Value()
	switch src := disk.Spec.Source; {
	case src.Image != nil:
		// Pruning of backing files waits until the disk referring to its own is in place.
		d.basesMu.RLock()
		defer d.basesMu.RUnlock()
		err = d.fromImage(ctx, disk, tmp, key, &want)
	case src.HTTP != nil:
		err = d.fromSource(ctx, disk, s, tmp, key, &want, req.Progress, importer.Source{URL: src.HTTP.URL, Networks: d.Networks})
	case src.Disk != nil:
		err = d.fromDisk(ctx, disk, req.Source, tmp, key, want)
	case src.Upload != nil && d.Uploads != nil:
		err = d.fromSource(ctx, disk, s, tmp, key, &want, req.Progress, importer.Source{Fetch: func(ctx context.Context, dst string, p importer.Progress) error {
			return d.Uploads(ctx, disk.Namespace, disk.Name, dst, p)
		}})
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
	if err := syncPath(tmp); err != nil {
		return storage.Volume{}, fmt.Errorf("sync new disk %s: %w", tmp, err)
	}
	if err := os.Link(tmp, path); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return storage.Volume{}, fmt.Errorf("local disk %s/%s (%s): %w", disk.Namespace, disk.Name, path, storage.ErrExists)
		}
		return storage.Volume{}, fmt.Errorf("put local disk %s/%s in place: %w", disk.Namespace, disk.Name, err)
	}
	if err := syncPath(dir); err != nil {
		slog.Warn("sync disk directory", "dir", dir, "err", err)
	}
	return storage.Volume{Driver: "file", Path: path, Format: "qcow2", KeyFile: key.File, SizeBytes: want}, nil
}

func (d *Driver) fromImage(ctx context.Context, disk *apps.VMDisk, tmp string, key storage.Key, want *int64) error {
	name := disk.Spec.Source.Image.Name
	var img storage.GoldenImage
	ok := false
	if d.Golden != nil {
		img, ok = d.Golden.Golden(name)
	}
	if !ok {
		return storage.GoldenNotHere(d.Golden, name)
	}
	imageSize, err := virtualSize(ctx, img.Path)
	if err != nil {
		return err
	}
	if disk.Spec.Optical {
		*want = imageSize
		if err := d.newEncrypted(ctx, disk.Namespace, tmp, key, imageSize, ""); err != nil {
			return err
		}
		return importer.Convert(ctx, img.Path, importer.Info{Format: "qcow2", VirtualSize: imageSize}, encryptedTarget(tmp, key), nil)
	}
	if imageSize > *want {
		return &importer.RefusedError{Reason: fmt.Sprintf("golden image %s is %s, larger than spec.storage %s", name, importer.HumanBytes(imageSize), disk.Spec.Storage.String())}
	}
	backing := img.Path
	if img.Managed {
		if backing, err = d.base(img); err != nil {
			return err
		}
	}
	return d.newEncrypted(ctx, disk.Namespace, tmp, key, *want, backing)
}

// base returns the backing file for disks made from a golden image copied by Kumo: a hard link
// (a copy across file systems) to the node's copy, named by the content's ID.
func (d *Driver) base(img storage.GoldenImage) (string, error) {
	dir, err := filepath.Abs(filepath.Join(d.Dir, basesDir))
	if err != nil {
		return "", err
	}
	path := filepath.Join(dir, img.Name+"."+img.ID+".qcow2")
	if _, err := statFile(path); err == nil {
		return path, nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("backing file of golden image %s: %w", img.Name, err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	err = os.Link(img.Path, path)
	if errors.Is(err, syscall.EXDEV) {
		err = copyNew(img.Path, path)
	}
	if err != nil && !errors.Is(err, fs.ErrExist) {
		return "", fmt.Errorf("backing file of golden image %s: %w", img.Name, err)
	}
	return path, nil
}

// copyNew copies src to a new file dst (through a temporary file, linked into place).
func copyNew(src, dst string) error {
	tmp := dst + ".copying"
	defer os.Remove(tmp)
	if err := copyFile(src, tmp); err != nil {
		return err
	}
	if err := syncPath(tmp); err != nil {
		return err
	}
	return os.Link(tmp, dst)
}

// PruneBases removes the backing files of golden images that no disk refers to any more. A disk
// whose header cannot be read keeps every backing file: unknown is not unused.
func (d *Driver) PruneBases(context.Context) error {
	d.basesMu.Lock()
	defer d.basesMu.Unlock()
	dir, err := filepath.Abs(filepath.Join(d.Dir, basesDir))
	if err != nil {
		return err
	}
	bases, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	used := map[string]bool{}
	nss, err := os.ReadDir(d.Dir)
	if err != nil {
		return err
	}
	for _, ns := range nss {
		if !ns.IsDir() || strings.HasPrefix(ns.Name(), ".") {
			continue
		}
		files, err := os.ReadDir(filepath.Join(d.Dir, ns.Name()))
		if err != nil {
			return err
		}
		for _, f := range files {
			if !strings.HasSuffix(f.Name(), ".qcow2") || f.IsDir() {
				continue
			}
			b, err := backingFile(filepath.Join(d.Dir, ns.Name(), f.Name()))
			if err != nil {
				return err
			}
			used[b] = true
		}
	}
	for _, b := range bases {
		path := filepath.Join(dir, b.Name())
		if used[path] {
			continue
		}
		if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		slog.Info("removed an unused backing file of a golden image", "file", path)
	}
	return nil
}

// backingFile reads the backing file name from a qcow2 header (stored in clear even when the
// image is encrypted): big-endian offset at byte 8, length at byte 16.
func backingFile(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	var hdr [20]byte
	if _, err := io.ReadFull(f, hdr[:]); err != nil {
		return "", fmt.Errorf("qcow2 header of %s: %w", path, err)
	}
	if string(hdr[:4]) != "QFI\xfb" {
		return "", fmt.Errorf("%s is not a qcow2 image", path)
	}
	off, n := binary.BigEndian.Uint64(hdr[8:16]), binary.BigEndian.Uint32(hdr[16:20])
	if off == 0 || n == 0 {
		return "", nil
	}
	if n > 1023 {
		return "", fmt.Errorf("qcow2 header of %s: backing file name of %d bytes", path, n)
	}
	name := make([]byte, n)
	if _, err := f.ReadAt(name, int64(off)); err != nil {
		return "", fmt.Errorf("qcow2 header of %s: %w", path, err)
	}
	return string(name), nil
}

func syncPath(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}

func (d *Driver) fromSource(ctx context.Context, disk *apps.VMDisk, s *storage.Scratch, tmp string, key storage.Key, want *int64, progress storage.Progress, fetch importer.Source) error {
	dl := s.Path("download")
	report := func(p int) {
		if progress != nil {
			progress(p)
		}
	}
	fetch.Limit = importer.DiskLimit(disk)
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

// fromDisk clones another local disk of the same tenant (same key) on this node. The source is
// the VMDisk object the caller resolved: its data is found by its UID, never by its name.
func (d *Driver) fromDisk(ctx context.Context, disk, source *apps.VMDisk, tmp string, key storage.Key, want int64) error {
	name := disk.Spec.Source.Disk.Name
	if source == nil || source.Name != name || source.Namespace != disk.Namespace {
		return fmt.Errorf("disk %s to clone was not resolved to a VMDisk of namespace %s", name, disk.Namespace)
	}
	src := d.Path(source)
	if _, err := statFile(src); errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("disk %s to clone has no data on this node (%s)", name, src)
	} else if err != nil {
		return fmt.Errorf("look for disk %s to clone: %w", name, err)
	}
	srcSize, err := virtualSize(ctx, src)
	if err != nil {
		return err
	}
	if srcSize > want {
		return &importer.RefusedError{Reason: fmt.Sprintf("disk %s is %s, larger than spec.storage %s", name, importer.HumanBytes(srcSize), disk.Spec.Storage.String())}
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
	if _, err := statFile(path); err == nil {
		return path, nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("look for the tenant's template: %w", err)
	}
	s, err := storage.NewScratch(filepath.Dir(path), scratchPrefix)
	if err != nil {
		return "", err
	}
	defer s.Close()
	tmp := s.Path("template.qcow2")
	if err := createEncrypted(ctx, tmp, key, 0); err != nil {
		return "", err
	}
	if err := syncPath(tmp); err != nil {
		return "", err
	}
	// Another creation may have made it meanwhile: its template serves as well.
	if err := os.Link(tmp, path); err != nil && !errors.Is(err, fs.ErrExist) {
		return "", fmt.Errorf("put the tenant's template in place: %w", err)
	}
	return path, nil
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

// List implements storage.Driver. It also removes the scratch directories of disk creations a
// crash cut short.
func (d *Driver) List(context.Context) (map[string][]string, error) {
	out := map[string][]string{}
	nss, err := os.ReadDir(d.Dir)
	if errors.Is(err, os.ErrNotExist) {
		return out, nil
	}
	for _, ns := range nss {
		if !ns.IsDir() || strings.HasPrefix(ns.Name(), ".") {
			continue // the backing files of golden images
		}
		if n, err := storage.SweepScratch(filepath.Join(d.Dir, ns.Name()), scratchPrefix); err != nil {
			slog.Warn("remove what crashed disk creations left", "namespace", ns.Name(), "err", err)
		} else if n > 0 {
			slog.Info("removed what crashed disk creations left", "namespace", ns.Name(), "count", n)
		}
		files, _ := os.ReadDir(filepath.Join(d.Dir, ns.Name()))
		for _, f := range files {
			if isLegacyTemp(f.Name()) && !f.IsDir() {
				// Temporary files of earlier versions, which made disks in place: none is in
				// use by this version, so any left is what a crash left.
				if err := os.Remove(filepath.Join(d.Dir, ns.Name(), f.Name())); err == nil {
					slog.Info("removed what a crashed disk creation left", "namespace", ns.Name(), "file", f.Name())
				}
				continue
			}
			if obj, ok := strings.CutSuffix(f.Name(), ".qcow2"); ok && !strings.HasPrefix(obj, ".") {
				out[ns.Name()] = append(out[ns.Name()], obj)
			}
		}
	}
	return out, err
}

// isLegacyTemp: a temporary file name of earlier versions (<object>.qcow2.creating[.download],
// .template-*.creating).
func isLegacyTemp(name string) bool {
	return strings.HasSuffix(name, ".qcow2.creating") || strings.HasSuffix(name, ".qcow2.creating.download") ||
		(strings.HasPrefix(name, templatePrefix) && strings.HasSuffix(name, ".creating"))
}

func virtualSize(ctx context.Context, path string) (int64, error) {
	ctx, cancel := context.WithTimeout(ctx, importer.MetadataTimeout)
	defer cancel()
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

// run runs a qemu-img command under its deadline: importer.ConvertTimeout for a conversion
// (a copy of the data), importer.MetadataTimeout for anything else.
func run(ctx context.Context, name string, args ...string) error {
	timeout := importer.MetadataTimeout
	if args[0] == "convert" {
		timeout = importer.ConvertTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if out, err := exec.CommandContext(ctx, name, args...).CombinedOutput(); err != nil {
		return fmt.Errorf("%s %s: %v: %s", name, args[0], err, strings.TrimSpace(string(out)))
	}
	return nil
}

func escape(s string) string { return strings.ReplaceAll(s, ",", ",,") }
