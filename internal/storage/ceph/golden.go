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
	"strings"

	"kumo.dev/kumo/internal/storage"
	"kumo.dev/kumo/internal/storage/importer"
	apps "kumo.dev/kumo/pkg/apis/apps/v1alpha1"
)

// A disk made from a golden image is a copy-on-write clone of the tenant's own encrypted copy
// of that image (its "base"): Ceph 16.2 cannot LUKS-format a clone, but a clone of a
// LUKS-formatted image opens with the parent's key. The base is made once per tenant and
// image; every further disk costs a clone and two resizes, whatever the image's size.
//
// Bases live in the tenant's RADOS namespace as golden_<image>.<image ID>-<key ID> with a
// protected snapshot named baseSnap; the key ID (a prefix of the key's SHA-256) keeps a tenant
// created again under the same name, with a new key, from finding the old tenant's base. "_"
// cannot appear in a VMDisk name, so bases never collide with disks and List leaves them out
// of garbage collection.

const (
	basePrefix = "golden_"
	baseSnap   = "base"
)

func isBase(image string) bool { return strings.HasPrefix(image, basePrefix) }

// cloneGolden makes img a clone of the tenant's base of the disk's golden image, sized to
// spec.storage.
func (d *Driver) cloneGolden(ctx context.Context, disk *apps.VMDisk, img *storage.RBDImage, key storage.Key) error {
	name := disk.Spec.Source.Image.Name
	base, baseRaw, err := d.ensureBase(ctx, disk.Namespace, name, key)
	if err != nil {
		return fmt.Errorf("tenant copy of golden image %s: %w", name, err)
	}
	if baseRaw-2*luksHeader > disk.Spec.Storage.Value() {
		return &importer.RefusedError{Reason: fmt.Sprintf("golden image %s is %s, larger than spec.storage %s", name, human(baseRaw-2*luksHeader), disk.Spec.Storage.String())}
	}
	if _, err := d.rbd(ctx, "clone", "--rbd-default-clone-format", "2", base+"@"+baseSnap, spec(img)); err != nil {
		return fmt.Errorf("clone %s (a cluster needs `ceph osd set-require-min-compat-client mimic` for clones across namespaces): %w", base, err)
	}
	// Ceph 16.2's crypto layer compares the clone's guest offsets with the parent overlap in
	// raw offsets, so reads in the last LUKS-header-sized stretch of the overlap fail with
	// EINVAL. Shrinking the clone by that stretch (the base's spare tail, never part of the
	// image) takes the broken range out of the overlap; growing it then adds plain new space.
	if _, err := d.rbd(ctx, "resize", "--allow-shrink", "--no-progress", "--size", mib(baseRaw-luksHeader), spec(img)); err != nil {
		return fmt.Errorf("trim the clone's overlap: %w", err)
	}
	if _, err := d.rbd(ctx, "resize", "--no-progress", "--size", mib(disk.Spec.Storage.Value()+luksHeader), spec(img)); err != nil {
		return fmt.Errorf("grow the clone to spec.storage: %w", err)
	}
	return nil
}

// ensureBase returns the tenant's base of a golden image (pool/namespace/image) and its raw
// size, making it when it does not exist: an encrypted image holding the golden image and one
// header's worth of spare tail, snapshotted and protected. It is built under a temporary name
// and renamed into place, so a base that exists is always complete; when two nodes race, the
// loser removes its copy.
func (d *Driver) ensureBase(ctx context.Context, namespace, image string, key storage.Key) (string, int64, error) {
	if d.GoldenID == nil {
		return "", 0, fmt.Errorf("this node does not know golden image %s", image)
	}
	id := d.GoldenID(image)
	if id == "" {
		return "", 0, fmt.Errorf("golden image %s does not exist", image)
	}
	keyData, err := os.ReadFile(key.File)
	if err != nil {
		return "", 0, err
	}
	sum := sha256.Sum256(keyData)
	id += "-" + hex.EncodeToString(sum[:4])
	name := d.Pool + "/" + namespace + "/" + basePrefix + image + "." + id
	if size, err := d.rawSize(ctx, name); err == nil {
		return name, size, nil
	}
	src, cleanup, err := d.fetch(ctx, &apps.VMDisk{Spec: apps.VMDiskSpec{Source: apps.VMDiskSource{Image: &apps.ImageSource{Name: image}}}}, func(int) {})
	defer cleanup()
	if err != nil {
		return "", 0, err
	}
	suffix := make([]byte, 4)
	rand.Read(suffix)
	tmp := &storage.RBDImage{Pool: d.Pool, Namespace: namespace, Image: basePrefix + image + "." + id + ".tmp" + hex.EncodeToString(suffix), Conf: d.Conf, User: d.User}
	removeTmp := func() {
		d.rbd(context.Background(), "snap", "unprotect", spec(tmp)+"@"+baseSnap)
		d.rbd(context.Background(), "snap", "purge", "--no-progress", spec(tmp))
		d.rbd(context.Background(), "rm", "--no-progress", spec(tmp))
	}
	err = d.createEncrypted(ctx, tmp, key, src.size+luksHeader)
	if err == nil {
		err = importer.Convert(ctx, src.file, src.info, d.target(tmp, key, "dst"), nil)
	}
	if err == nil {
		_, err = d.rbd(ctx, "snap", "create", "--no-progress", spec(tmp)+"@"+baseSnap)
	}
	if err == nil {
		_, err = d.rbd(ctx, "snap", "protect", spec(tmp)+"@"+baseSnap)
	}
	if err != nil {
		removeTmp()
		return "", 0, err
	}
	if _, err := d.rbd(ctx, "rename", spec(tmp), name); err != nil {
		removeTmp()
		if size, err2 := d.rawSize(ctx, name); err2 == nil {
			return name, size, nil // another node made it first
		}
		return "", 0, fmt.Errorf("rename the new base into place: %w", err)
	}
	slog.Info("tenant copy of golden image made", "image", image, "namespace", namespace, "base", name)
	size, err := d.rawSize(ctx, name)
	return name, size, err
}

// PruneBases removes the bases no disk is cloned from any more when their golden image is gone
// (or was imported again under the same name) or their namespace holds no disk (the tenant may
// be gone; its next disk makes the base again).
func (d *Driver) PruneBases(ctx context.Context) error {
	all, err := d.images(ctx)
	if err != nil {
		return err
	}
	for ns, images := range all {
		for _, image := range images {
			rest, ok := strings.CutPrefix(image, basePrefix)
			if !ok || strings.Contains(image, ".tmp") {
				continue
			}
			golden, id, ok := storage.ParseObjectName(rest)
			id, _, _ = strings.Cut(id, "-")
			if !ok || (d.GoldenID != nil && d.GoldenID(golden) == id && len(images) > countBases(images)) {
				continue
			}
			base := d.Pool + "/" + ns + "/" + image
			out, err := d.rbd(ctx, "children", "--format", "json", base+"@"+baseSnap)
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
			if _, err := d.rbd(ctx, "snap", "unprotect", base+"@"+baseSnap); err != nil {
				return err
			}
			if _, err := d.rbd(ctx, "snap", "purge", "--no-progress", base); err != nil {
				return err
			}
			if _, err := d.rbd(ctx, "rm", "--no-progress", base); err != nil {
				return err
			}
			slog.Info("removed an unused tenant copy of a golden image", "base", base)
		}
	}
	return nil
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
