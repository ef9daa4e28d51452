// Package ceph stores replicated disks as Ceph RBD images, opened by QEMU's own librbd driver
// (no data path of Kumo's). Each tenant's disks live in the tenant's RADOS namespace, each image
// is LUKS2-formatted with the tenant's key, and the pool's CRUSH rule keeps one replica per
// datacenter. A disk made from a golden image is a copy-on-write clone of the tenant's encrypted
// copy of that image (see golden.go).
package ceph

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"kumo.dev/kumo/internal/storage"
	"kumo.dev/kumo/internal/storage/importer"
	apps "kumo.dev/kumo/pkg/apis/apps/v1alpha1"
)

// luksHeader is what LUKS2 takes from an RBD image: the guest sees the image minus this.
const luksHeader = 16 << 20

// Driver reaches one pool of a Ceph cluster as one cephx user.
type Driver struct {
	Conf, User, Pool string
	// Golden finds the node's golden images to make tenant bases from (nil: none).
	Golden storage.GoldenImages
	// ScratchDir holds downloads while they are inspected.
	ScratchDir string
	// Uploads fetches uploaded content (nil: uploads are not available).
	Uploads storage.Uploads
	// Networks are the addresses http imports may connect to (zero: no internal address).
	Networks importer.Networks
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

// Open implements storage.Driver.
func (d *Driver) Open(ctx context.Context, disk *apps.VMDisk, key storage.Key) (storage.Volume, error) {
	if key.File == "" {
		return storage.Volume{}, errors.New("no tenant key: replicated disks are always encrypted")
	}
	img := d.image(disk)
	vol := storage.Volume{Driver: "rbd", Path: spec(img), Format: "raw", KeyFile: key.File, RBD: img, SizeBytes: disk.Spec.Storage.Value()}
	raw, err := d.rawSize(ctx, spec(img))
	if isAbsent(err) {
		return storage.Volume{}, fmt.Errorf("RBD image %s: %w", spec(img), storage.ErrNotFound)
	}
	if err != nil {
		return storage.Volume{}, fmt.Errorf("look for RBD image %s: %w", spec(img), err)
	}
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

// Create implements storage.Driver. The image is built under a temporary name (see
// creatingName) and renamed into place only once it holds its whole content: an image under a
// disk's final name is always complete, even when the agent is killed in the middle of an import
// (the restarted agent finds no image and builds it again; the sweep in List removes what the
// killed build left). The rename fails when an image of the final name appeared meanwhile: that
// image is left alone and only the temporary one is removed.
func (d *Driver) Create(ctx context.Context, req storage.Request) (storage.Volume, error) {
	disk, key := req.Disk, req.Key
	if key.File == "" {
		return storage.Volume{}, errors.New("no tenant key: replicated disks are always encrypted")
	}
	img := d.image(disk)
	vol := storage.Volume{Driver: "rbd", Path: spec(img), Format: "raw", KeyFile: key.File, RBD: img, SizeBytes: disk.Spec.Storage.Value()}
	// Look first so that an existing disk costs no download; the rename is what guarantees
	// nothing is replaced.
	if _, err := d.rawSize(ctx, spec(img)); err == nil {
		return storage.Volume{}, fmt.Errorf("RBD image %s: %w", spec(img), storage.ErrExists)
	} else if !isAbsent(err) {
		return storage.Volume{}, fmt.Errorf("look for RBD image %s: %w", spec(img), err)
	}
	if _, err := d.rbd(ctx, "namespace", "create", img.Pool+"/"+img.Namespace); err != nil && !isExists(err) {
		return storage.Volume{}, fmt.Errorf("RADOS namespace of %s: %w", disk.Namespace, err)
	}
	tmp := *img
	tmp.Image = creatingName(img.Image)
	var made bool // whether this call cloned the temporary image: only then may it remove it
	var err error
	if src := disk.Spec.Source; src.Image != nil && !disk.Spec.Optical {
		err = d.cloneBase(ctx, disk, &tmp, key, src.Image.Name, disk.Spec.Storage.Value(), &made)
	} else {
		vol.SizeBytes, err = d.copyIn(ctx, req, &tmp, &made)
	}
	if err == nil && createHook != nil {
		err = createHook(ctx, spec(&tmp))
	}
	if err == nil {
		if _, err = d.rbd(ctx, "rename", spec(&tmp), spec(img)); isExists(err) {
			err = fmt.Errorf("RBD image %s appeared while this disk was made: %w", spec(img), storage.ErrExists)
		} else if err != nil {
			err = fmt.Errorf("rename the finished image %s to %s: %w", spec(&tmp), spec(img), err)
		}
	}
	if err != nil {
		if made {
			// Only the temporary image: the final name is never removed here (after a rename
			// that timed out but happened, the removal finds nothing and the disk is complete).
			rmCtx, cancel := context.WithTimeout(context.Background(), rbdTimeout)
			defer cancel()
			if _, rmErr := d.rbd(rmCtx, "rm", "--no-progress", spec(&tmp)); rmErr != nil && !isAbsent(rmErr) {
				err = fmt.Errorf("%w (and removing the half-made image %s failed: %v)", err, spec(&tmp), rmErr)
			}
		}
		return storage.Volume{}, err // wraps storage.ErrExists when the image was found there
	}
	return vol, nil
}

// createHook, when set (by tests), runs once a new image is filled and before it is renamed into
// place; an error stops Create there.
var createHook func(ctx context.Context, tmpImage string) error

// A disk's image is built as <object name>.creating-<8 hex digits>. A VMDisk object name ends
// in ".<UID prefix>", so no disk's final name has this form.
const creatingInfix = ".creating-"

var creatingImage = regexp.MustCompile(`\.creating-[0-9a-f]{8}$`)

// isCreating says whether an image is a disk still being built (or what a killed build left).
func isCreating(image string) bool { return creatingImage.MatchString(image) }

// creatingName is a fresh temporary name to build the image of a disk named final under.
func creatingName(final string) string {
	suffix := make([]byte, 4)
	rand.Read(suffix)
	return final + creatingInfix + hex.EncodeToString(suffix)
}

// creatingAge is when an image still under its temporary name is certainly what a killed build
// left: the build's download (importer.DefaultTimeouts.Total) and conversion
// (importer.ConvertTimeout) would both have ended long before.
var creatingAge = importer.DefaultTimeouts.Total + importer.ConvertTimeout + time.Hour

// sweepCreating removes the images of one namespace that a killed build left under their
// temporary names, once they are older than any build can last; younger ones may be being built
// right now, by this node or another.
func (d *Driver) sweepCreating(ctx context.Context, namespace string, images []string) error {
	for _, image := range images {
		if !isCreating(image) {
			continue
		}
		name := d.Pool + "/" + namespace + "/" + image
		created, err := d.createdAt(ctx, name)
		if isAbsent(err) {
			continue // renamed or removed since the listing
		}
		if err != nil {
			return fmt.Errorf("age of the unfinished image %s: %w", name, err)
		}
		if now().Sub(created) < creatingAge {
			continue
		}
		if _, err := d.rbd(ctx, "rm", "--no-progress", name); err != nil && !isAbsent(err) {
			return fmt.Errorf("remove the unfinished image %s a killed build left: %w", name, err)
		}
		slog.Info("removed the unfinished image of a disk a killed build left", "image", name, "created", created)
	}
	return nil
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
func (d *Driver) copyIn(ctx context.Context, req storage.Request, img *storage.RBDImage, made *bool) (int64, error) {
	disk, key := req.Disk, req.Key
	report := func(p int) {
		if req.Progress != nil {
			req.Progress(p)
		}
	}
	want := disk.Spec.Storage.Value()
	// The image's size is known up front unless the disk is optical: make it (the first disk of
	// a tenant formats the blank base, seconds of LUKS2 key derivation) while the source downloads.
	var created chan error
	if !disk.Spec.Optical {
		created = make(chan error, 1)
		go func() { created <- d.cloneBase(ctx, disk, img, key, "", want, made) }()
	}
	src, cleanup, err := d.fetch(ctx, req, report)
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
		if err := d.cloneBase(ctx, disk, img, key, "", want, made); err != nil {
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
		cctx, cancel := context.WithTimeout(ctx, importer.ConvertTimeout)
		defer cancel()
		if out, err := exec.CommandContext(cctx, "qemu-img", args...).CombinedOutput(); err != nil {
			return 0, fmt.Errorf("clone %s: %v: %s", disk.Spec.Source.Disk.Name, err, strings.TrimSpace(string(out)))
		}
	}
	return want, nil
}

// scratchPrefix starts the scratch directories of downloads in ScratchDir.
const scratchPrefix = ".download-"

// fetch finds, downloads and inspects a disk's source. A blank disk has none (zero size).
func (d *Driver) fetch(ctx context.Context, req storage.Request, report func(int)) (source, func(), error) {
	nothing := func() {}
	disk := req.Disk
	switch src := disk.Spec.Source; {
	case src.Image != nil:
		gs, err := d.goldenSource(ctx, src.Image.Name)
		return gs, nothing, err
	case src.HTTP != nil || (src.Upload != nil && d.Uploads != nil):
		fetch := importer.Source{Fetch: func(ctx context.Context, dst string, p importer.Progress) error {
			return d.Uploads(ctx, disk.Namespace, disk.Name, dst, p)
		}}
		if src.HTTP != nil {
			fetch = importer.Source{URL: src.HTTP.URL, Networks: d.Networks}
		}
		if n, err := storage.SweepScratch(d.ScratchDir, scratchPrefix); err != nil {
			slog.Warn("remove what crashed downloads left", "dir", d.ScratchDir, "err", err)
		} else if n > 0 {
			slog.Info("removed what crashed downloads left", "dir", d.ScratchDir, "count", n)
		}
		s, err := storage.NewScratch(d.ScratchDir, scratchPrefix)
		if err != nil {
			return source{}, nothing, err
		}
		cleanup := func() { s.Close() }
		dl := s.Path("download")
		fetch.Limit = importer.DiskLimit(disk)
		info, err := importer.Fetch(ctx, fetch, dl, report)
		if err != nil {
			return source{}, cleanup, err
		}
		return source{file: dl, info: info, size: info.VirtualSize}, cleanup, nil
	case src.Disk != nil:
		// The source is the VMDisk object the caller resolved: its image is found by its UID,
		// never by its name.
		if req.Source == nil || req.Source.Name != src.Disk.Name || req.Source.Namespace != disk.Namespace {
			return source{}, nothing, fmt.Errorf("disk %s to clone was not resolved to a VMDisk of namespace %s", src.Disk.Name, disk.Namespace)
		}
		from := d.image(req.Source)
		raw, err := d.rawSize(ctx, spec(from))
		if isAbsent(err) {
			return source{}, nothing, fmt.Errorf("disk %s to clone has no RBD image (%s)", src.Disk.Name, spec(from))
		}
		if err != nil {
			return source{}, nothing, fmt.Errorf("look for disk %s to clone: %w", src.Disk.Name, err)
		}
		return source{image: from, size: raw - luksHeader}, nothing, nil
	case src.Upload != nil:
		return source{}, nothing, errors.New("this node cannot fetch uploads")
	}
	return source{}, nothing, nil
}

// goldenSource is the node's copy of a golden image, inspected.
func (d *Driver) goldenSource(ctx context.Context, name string) (source, error) {
	img, ok := d.golden(name)
	if !ok {
		return source{}, storage.GoldenNotHere(d.Golden, name)
	}
	info, err := importer.Inspect(ctx, img.Path)
	if err != nil {
		return source{}, fmt.Errorf("golden image %s: %w", name, err)
	}
	return source{file: img.Path, info: info, size: info.VirtualSize}, nil
}

// goldenGone says whether the golden image is known not to exist any more (false: it exists, or
// this node cannot tell).
func (d *Driver) goldenGone(name string) bool {
	g, ok := d.Golden.(interface{ Gone(name string) bool })
	return ok && g.Gone(name)
}

func (d *Driver) golden(name string) (storage.GoldenImage, bool) {
	if d.Golden == nil {
		return storage.GoldenImage{}, false
	}
	return d.Golden.Golden(name)
}

// createEncrypted creates an image whose encrypted payload holds size bytes, LUKS2-formatted
// with the tenant's key.
// made is set once the image exists.
func (d *Driver) createEncrypted(ctx context.Context, img *storage.RBDImage, key storage.Key, size int64, made *bool) error {
	if _, err := d.rbd(ctx, "create", "--size", mib(size+luksHeader), spec(img)); err != nil {
		return fmt.Errorf("create RBD image %s: %w", spec(img), err)
	}
	*made = true
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
	if _, err := d.rbd(ctx, "rm", "--no-progress", d.Pool+"/"+namespace+"/"+object); err != nil && !isAbsent(err) {
		return err
	}
	return nil
}

// List implements storage.Driver: the disk images of every tenant namespace of the pool (not
// the golden bases, nor images still being built). It also removes the node's downloads a crash
// cut short and the unfinished images of builds killed long ago (see sweepCreating).
func (d *Driver) List(ctx context.Context) (map[string][]string, error) {
	if n, err := storage.SweepScratch(d.ScratchDir, scratchPrefix); err != nil {
		slog.Warn("remove what crashed downloads left", "dir", d.ScratchDir, "err", err)
	} else if n > 0 {
		slog.Info("removed what crashed downloads left", "dir", d.ScratchDir, "count", n)
	}
	all, err := d.images(ctx)
	if err != nil {
		return nil, err
	}
	out := map[string][]string{}
	for ns, images := range all {
		if err := d.sweepCreating(ctx, ns, images); err != nil {
			slog.Warn("remove what killed disk builds left", "namespace", ns, "err", err)
		}
		for _, image := range images {
			// Neither bases nor images being built are disks: their names are not a disk's
			// object name, and garbage collection must not remove a build in progress.
			if !isBase(image) && !isCreating(image) {
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

// rbdTimeout bounds every rbd command: a cluster that does not answer is an error, not a hang.
const rbdTimeout = 5 * time.Minute

// rbdCommand starts rbd; tests inject failures.
var rbdCommand = exec.CommandContext

// rbd's exit status is the errno of the failure: ENOENT when the image (or snapshot) does not
// exist, EEXIST when it does. Anything else is a failure to know.
const (
	rbdAbsent = int(syscall.ENOENT)
	rbdExists = int(syscall.EEXIST)
)

// rbdError is a failed rbd command with its exit status.
type rbdError struct {
	args   string
	status int // -1 when rbd did not exit by itself (killed, timed out, not started)
	err    error
	output string
}

func (e *rbdError) Error() string {
	return fmt.Sprintf("rbd %s: %v: %s", e.args, e.err, e.output)
}

func (e *rbdError) Unwrap() error { return e.err }

func rbdStatus(err error) int {
	var re *rbdError
	if errors.As(err, &re) {
		return re.status
	}
	return -1
}

// isAbsent: rbd said the image does not exist.
func isAbsent(err error) bool { return err != nil && rbdStatus(err) == rbdAbsent }

// isExists: rbd said the image exists already.
func isExists(err error) bool { return err != nil && rbdStatus(err) == rbdExists }

func (d *Driver) rbd(ctx context.Context, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, rbdTimeout)
	defer cancel()
	full := append([]string{"-c", d.Conf, "--id", d.User}, args...)
	out, err := rbdCommand(ctx, "rbd", full...).CombinedOutput()
	if err != nil {
		status := -1
		var ee *exec.ExitError
		if errors.As(err, &ee) && ee.Exited() && ctx.Err() == nil {
			status = ee.ExitCode()
		}
		return "", &rbdError{args: strings.Join(args, " "), status: status, err: err, output: strings.TrimSpace(string(out))}
	}
	return string(out), nil
}
