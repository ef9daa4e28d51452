package ceph

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"regexp"
	"strings"
	"syscall"
	"time"

	"kumo.dev/kumo/internal/storage"
	"kumo.dev/kumo/internal/storage/importer"
	apps "kumo.dev/kumo/pkg/apis/apps/v1alpha1"
)

// Every replicated disk is a copy-on-write clone of one of its tenant's "bases": LUKS2-formatted
// images made once per tenant, either empty (the blank base, for blank, imported and cloned
// disks, which are then filled) or holding a golden image. Ceph 16.2 cannot LUKS-format a
// clone, but a clone of a LUKS-formatted image opens with the parent's key; so a new disk costs
// a clone and two resizes instead of a LUKS2 format (seconds of key derivation), and a disk from
// a golden image costs the same whatever the image's size. A tenant's disks share the base's
// master key; tenants never share one.
//
// Bases live in the tenant's RADOS namespace as golden_<image>.<image ID>-<key ID> and
// golden_.blank-<key ID>, each with a protected snapshot named baseSnap; the key ID (a prefix of
// the key's SHA-256) keeps a tenant created again under the same name, with a new key, from
// finding the old tenant's bases. "_" cannot appear in a VMDisk name, so bases never collide
// with disks and List leaves them out of garbage collection.

const (
	basePrefix = "golden_"
	blankBase  = basePrefix + ".blank"
	baseSnap   = "base"
)

func isBase(image string) bool { return strings.HasPrefix(image, basePrefix) }

// tempBase matches the temporary name a base is built under (see ensureBase).
var tempBase = regexp.MustCompile(`\.tmp[0-9a-f]{8}$`)

func isTempBase(image string) bool { return tempBase.MatchString(image) }

// cloneBase makes img a clone of the tenant's base of a golden image ("": the blank base)
// holding size bytes under its LUKS header. made is set once the clone exists: from then on the
// image is this call's to remove on failure (a clone that fails because the image exists made
// nothing).
func (d *Driver) cloneBase(ctx context.Context, disk *apps.VMDisk, img *storage.RBDImage, key storage.Key, golden string, size int64, made *bool) error {
	base, baseRaw, err := d.ensureBase(ctx, disk.Namespace, golden, key)
	if err != nil {
		if golden == "" {
			return fmt.Errorf("tenant's blank base: %w", err)
		}
		return fmt.Errorf("tenant copy of golden image %s: %w", golden, err)
	}
	if content := baseRaw - 2*luksHeader; content > size {
		return &importer.RefusedError{Reason: fmt.Sprintf("golden image %s is %s, larger than spec.storage %s", golden, importer.HumanBytes(content), disk.Spec.Storage.String())}
	}
	_, err = d.rbd(ctx, "clone", "--rbd-default-clone-format", "2", base+"@"+baseSnap, spec(img))
	for attempt := 1; isAbsent(err) && attempt < baseAttempts; attempt++ {
		// The base (or its snapshot) vanished between the look and the clone: another node's
		// pruning saw no clone of it yet. Make it again.
		slog.Info("tenant base removed while cloning it; making it again", "base", base, "image", spec(img))
		if base, baseRaw, err = d.ensureBase(ctx, disk.Namespace, golden, key); err != nil {
			return fmt.Errorf("tenant base, made again: %w", err)
		}
		_, err = d.rbd(ctx, "clone", "--rbd-default-clone-format", "2", base+"@"+baseSnap, spec(img))
	}
	if err != nil {
		if isExists(err) {
			return fmt.Errorf("RBD image %s: %w", spec(img), storage.ErrExists)
		}
		return fmt.Errorf("clone %s (a cluster needs `ceph osd set-require-min-compat-client mimic` for clones across namespaces): %w", base, err)
	}
	*made = true
	// Ceph 16.2's crypto layer compares the clone's guest offsets with the parent overlap in
	// raw offsets, so reads in the last LUKS-header-sized stretch of the overlap fail with
	// EINVAL. Shrinking the clone by that stretch (the base's spare tail, never part of the
	// content) takes the broken range out of the overlap; growing it then adds plain new space.
	if _, err := d.rbd(ctx, "resize", "--allow-shrink", "--no-progress", "--size", mib(baseRaw-luksHeader), spec(img)); err != nil {
		return fmt.Errorf("trim the clone's overlap: %w", err)
	}
	if _, err := d.rbd(ctx, "resize", "--no-progress", "--size", mib(size+luksHeader), spec(img)); err != nil {
		return fmt.Errorf("grow the clone to %s: %w", importer.HumanBytes(size), err)
	}
	return nil
}

// baseAttempts bounds the clones of a base that vanishes under them (see cloneBase).
const baseAttempts = 3

// ensureBase returns the tenant's base of a golden image ("": the blank base) as
// pool/namespace/image and its raw size, making it when it does not exist: an encrypted image
// holding the golden image (or nothing) and one header's worth of spare tail, snapshotted and
// protected. It is built under a temporary name and renamed into place, so a base that exists
// is always complete; when two nodes race, the loser removes its copy.
func (d *Driver) ensureBase(ctx context.Context, namespace, golden string, key storage.Key) (string, int64, error) {
	keyData, err := os.ReadFile(key.File)
	if err != nil {
		return "", 0, err
	}
	sum := sha256.Sum256(keyData)
	keyID := hex.EncodeToString(sum[:4])
	short := blankBase + "-" + keyID
	var img storage.GoldenImage
	if golden != "" {
		var ok bool
		if img, ok = d.golden(golden); !ok {
			return "", 0, storage.GoldenNotHere(d.Golden, golden)
		}
		short = basePrefix + golden + "." + img.ID + "-" + keyID
	}
	name := d.Pool + "/" + namespace + "/" + short
	if size, err := d.rawSize(ctx, name); err == nil {
		return name, size, nil
	} else if !isAbsent(err) {
		return "", 0, fmt.Errorf("look for base %s: %w", name, err)
	}
	var src source
	if golden != "" {
		info, err := importer.Inspect(ctx, img.Path)
		if err != nil {
			return "", 0, fmt.Errorf("golden image %s: %w", golden, err)
		}
		src = source{file: img.Path, info: info, size: info.VirtualSize}
	}
	suffix := make([]byte, 4)
	rand.Read(suffix)
	tmp := &storage.RBDImage{Pool: d.Pool, Namespace: namespace, Image: short + ".tmp" + hex.EncodeToString(suffix), Conf: d.Conf, User: d.User}
	made := false
	err = d.createEncrypted(ctx, tmp, key, src.size+luksHeader, &made)
	if err == nil && src.file != "" {
		err = importer.Convert(ctx, src.file, src.info, d.target(tmp, key, "dst"), nil)
	}
	if err == nil {
		_, err = d.rbd(ctx, "snap", "create", "--no-progress", spec(tmp)+"@"+baseSnap)
	}
	if err == nil {
		_, err = d.rbd(ctx, "snap", "protect", spec(tmp)+"@"+baseSnap)
	}
	if err == nil {
		_, err = d.rbd(ctx, "rename", spec(tmp), name)
	}
	if err != nil {
		if made {
			rmCtx, cancel := context.WithTimeout(context.Background(), rbdTimeout)
			if rmErr := d.removeBase(rmCtx, spec(tmp)); rmErr != nil {
				slog.Warn("remove a half-made base", "base", spec(tmp), "err", rmErr)
			}
			cancel()
		}
		if size, err2 := d.rawSize(ctx, name); err2 == nil {
			return name, size, nil // another node made it first
		}
		return "", 0, err
	}
	slog.Info("tenant base image made", "golden", golden, "namespace", namespace, "base", name)
	size, err := d.rawSize(ctx, name)
	return name, size, err
}

// removeBase removes a base and its snapshot.
func (d *Driver) removeBase(ctx context.Context, base string) error {
	// EINVAL: the snapshot is not protected (any other trouble shows in the next steps).
	if _, err := d.rbd(ctx, "snap", "unprotect", base+"@"+baseSnap); err != nil && !isAbsent(err) && rbdStatus(err) != int(syscall.EINVAL) {
		return err
	}
	if _, err := d.rbd(ctx, "snap", "purge", "--no-progress", base); err != nil && !isAbsent(err) {
		return err
	}
	if _, err := d.rbd(ctx, "rm", "--no-progress", base); err != nil && !isAbsent(err) {
		return err
	}
	return nil
}

// PruneBases removes the bases no disk is cloned from any more when their namespace holds no
// disk (the tenant may be gone; its next disk makes them again) or, for a golden image's base,
// when the image is gone or was imported again under the same name.
func (d *Driver) PruneBases(ctx context.Context) error {
	all, err := d.images(ctx)
	if err != nil {
		return err
	}
	for ns, images := range all {
		hasDisks := len(images) > countBases(images)
		for _, image := range images {
			if isBase(image) && isTempBase(image) {
				if err := d.removeOrphanBase(ctx, d.Pool+"/"+ns+"/"+image); err != nil {
					return err
				}
				continue
			}
			if !isBase(image) {
				continue
			}
			replaced := false
			if golden, id, ok := storage.ParseObjectName(strings.TrimPrefix(image, basePrefix)); ok && !strings.HasPrefix(image, blankBase) {
				id, _, _ = strings.Cut(id, "-")
				// Stale when the image is known to hold other content now, or known to be
				// gone. A node that holds no copy of it (not cached yet) knows neither: the
				// pool is shared, other nodes clone from the base.
				img, ok := d.golden(golden)
				replaced = (ok && img.ID != id) || (!ok && d.goldenGone(golden))
			}
			if !replaced && hasDisks {
				continue
			}
			base := d.Pool + "/" + ns + "/" + image
			if !replaced {
				// Unused only because the namespace holds no disk yet: a tenant's first disks
				// are cloned from a base another node has just made. Keep young bases.
				young, err := d.youngerThan(ctx, base, baseGrace)
				if err != nil || young {
					if isAbsent(err) {
						err = nil
					}
					if err != nil {
						return err
					}
					continue
				}
			}
			out, err := d.rbd(ctx, "children", "--format", "json", base+"@"+baseSnap)
			if isAbsent(err) {
				out, err = "[]", nil // no snapshot (a removal cut short): nothing is cloned from it
			}
			if err != nil {
				return err
			}
			var kids []json.RawMessage
			if err := json.Unmarshal([]byte(out), &kids); err != nil {
				return fmt.Errorf("rbd children %s: %w", base, err)
			}
			if len(kids) > 0 {
				continue
			}
			if err := d.removeBase(ctx, base); err != nil {
				return err
			}
			slog.Info("removed an unused tenant base image", "base", base)
		}
	}
	return nil
}

// baseGrace is how long a base no disk uses yet is kept: long enough for every node that is
// preparing a tenant's first disks to have cloned them from it.
const baseGrace = 30 * time.Minute

// youngerThan says whether image was created less than age ago.
func (d *Driver) youngerThan(ctx context.Context, image string, age time.Duration) (bool, error) {
	created, err := d.createdAt(ctx, image)
	if err != nil {
		return false, err
	}
	return now().Sub(created) < age, nil
}

// orphanAge is when a base still under its temporary name is certainly what a crash left: its
// builder's conversion would have ended (importer.ConvertTimeout) long before.
const orphanAge = importer.ConvertTimeout + time.Hour

// now is time.Now; tests move the clock.
var now = time.Now

// removeOrphanBase removes a base left under its temporary name by a build that crashed, once
// it is older than any build can last.
func (d *Driver) removeOrphanBase(ctx context.Context, base string) error {
	created, err := d.createdAt(ctx, base)
	if isAbsent(err) {
		return nil
	}
	if err != nil {
		return err
	}
	if now().Sub(created) < orphanAge {
		return nil // possibly being built right now
	}
	if err := d.removeBase(ctx, base); err != nil {
		return err
	}
	slog.Info("removed a base a crashed build left", "base", base, "created", created)
	return nil
}

// createdAt is when an image was created, as rbd info tells it.
func (d *Driver) createdAt(ctx context.Context, image string) (time.Time, error) {
	out, err := d.rbd(ctx, "info", "--format", "json", image)
	if err != nil {
		return time.Time{}, err
	}
	var info struct {
		Created string `json:"create_timestamp"`
	}
	if err := json.Unmarshal([]byte(out), &info); err != nil {
		return time.Time{}, fmt.Errorf("rbd info %s: %w", image, err)
	}
	created, err := time.ParseInLocation(time.ANSIC, info.Created, time.Local)
	if err != nil {
		return time.Time{}, fmt.Errorf("creation time of %s: %w", image, err)
	}
	return created, nil
}

func countBases(images []string) int {
	n := 0
	for _, image := range images {
		if isBase(image) {
			n++
		}
	}
	return n
}
