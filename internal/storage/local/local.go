// Package local stores VM disks as qcow2 files on the node. A disk from a golden image is a
// copy-on-write overlay on the node's cached image; a blank disk is an empty qcow2 file. A local
// disk lives on the node where it was created, and its VM runs there.
package local

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
	apps "kumo.dev/kumo/pkg/apis/apps/v1alpha1"
)

// Driver keeps disks under Dir; golden images are ImagesDir/<name>.qcow2.
type Driver struct {
	Dir       string
	ImagesDir string
}

var _ storage.Driver = &Driver{}

// Info implements storage.Driver.
func (d *Driver) Info() storage.Info {
	return storage.Info{Name: string(apps.StorageLocal), Shared: false, Snapshots: true, Clones: true, OnlineResize: true}
}

// Path is where a disk's file lives.
func (d *Driver) Path(namespace, name string) string {
	return filepath.Join(d.Dir, namespace, name+".qcow2")
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
func (d *Driver) Ensure(ctx context.Context, disk *apps.VMDisk) (storage.Volume, error) {
	path := d.Path(disk.Namespace, disk.Name)
	if _, err := os.Stat(path); err == nil {
		size, err := virtualSize(ctx, path)
		return storage.Volume{Driver: "file", Path: path, Format: "qcow2", SizeBytes: size}, err
	}
	want := disk.Spec.Storage.Value()
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return storage.Volume{}, err
	}
	tmp := path + ".creating"
	defer os.Remove(tmp)
	var args []string
	switch src := disk.Spec.Source; {
	case src.Image != nil:
		image := d.ImagePath(src.Image.Name)
		if _, err := os.Stat(image); err != nil {
			return storage.Volume{}, fmt.Errorf("golden image %s is not on this node (%s)", src.Image.Name, image)
		}
		imageSize, err := virtualSize(ctx, image)
		if err != nil {
			return storage.Volume{}, err
		}
		if imageSize > want && !disk.Spec.Optical {
			return storage.Volume{}, fmt.Errorf("golden image %s is %s, larger than spec.storage %s", src.Image.Name, human(imageSize), disk.Spec.Storage.String())
		}
		if disk.Spec.Optical {
			want = imageSize
		}
		args = []string{"create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", image, tmp, strconv.FormatInt(want, 10)}
	case src.HTTP == nil && src.Upload == nil && src.Disk == nil:
		args = []string{"create", "-q", "-f", "qcow2", tmp, strconv.FormatInt(want, 10)}
	default:
		return storage.Volume{}, fmt.Errorf("disk source %s is not supported by the local driver yet", sourceName(src))
	}
	if out, err := exec.CommandContext(ctx, "qemu-img", args...).CombinedOutput(); err != nil {
		return storage.Volume{}, fmt.Errorf("qemu-img %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	if err := os.Chmod(tmp, 0o600); err != nil {
		return storage.Volume{}, err
	}
	if err := os.Rename(tmp, path); err != nil {
		return storage.Volume{}, err
	}
	return storage.Volume{Driver: "file", Path: path, Format: "qcow2", SizeBytes: want}, nil
}

// Delete implements storage.Driver.
func (d *Driver) Delete(_ context.Context, namespace, name string) error {
	err := os.Remove(d.Path(namespace, name))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	return err
}

// Disks lists the disks on this node as namespace/name.
func (d *Driver) Disks() []string {
	var out []string
	nss, _ := os.ReadDir(d.Dir)
	for _, ns := range nss {
		files, _ := os.ReadDir(filepath.Join(d.Dir, ns.Name()))
		for _, f := range files {
			if name, ok := strings.CutSuffix(f.Name(), ".qcow2"); ok {
				out = append(out, ns.Name()+"/"+name)
			}
		}
	}
	return out
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

func sourceName(s apps.VMDiskSource) string {
	switch {
	case s.HTTP != nil:
		return "http"
	case s.Upload != nil:
		return "upload"
	case s.Disk != nil:
		return "disk (clone)"
	}
	return "image"
}

func human(b int64) string {
	return fmt.Sprintf("%.1fGi", float64(b)/(1<<30))
}
