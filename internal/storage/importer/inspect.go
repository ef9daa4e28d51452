// Package importer brings outside images into Kumo disks safely: it downloads (with progress,
// gzip/xz accepted), inspects the file with qemu-img under CPU and memory limits, refuses anything
// but a self-contained image in an allowed format — no backing files, external data files, extents
// elsewhere on the host, absurd sizes or corrupt metadata — and only then converts it with
// qemu-img into the storage class's target and grows it to the disk's size.
package importer

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
	"time"
)

const (
	// MaxVirtualSize refuses images claiming more than 64 TiB.
	MaxVirtualSize = int64(64) << 40
	// inspectCPUSeconds and inspectMemory bound qemu-img while it reads untrusted metadata.
	inspectCPUSeconds = 30
	inspectMemory     = 1 << 30
	inspectTimeout    = 60 * time.Second
)

// AllowedFormats are the formats Kumo imports (an ISO is a raw image to qemu-img).
var AllowedFormats = []string{"raw", "qcow2", "vmdk", "vhdx", "vdi"}

// Info is what inspection found.
type Info struct {
	Format      string
	VirtualSize int64
	ActualSize  int64
}

// RefusedError says why an image was refused; it is the user's problem, not the system's.
type RefusedError struct{ Reason string }

func (e *RefusedError) Error() string { return "image refused: " + e.Reason }

func refuse(format string, args ...interface{}) error {
	return &RefusedError{Reason: fmt.Sprintf(format, args...)}
}

// IsRefused says whether err is a refusal of the image (not an I/O or system failure).
func IsRefused(err error) bool {
	var r *RefusedError
	return errors.As(err, &r)
}

type qemuImgInfo struct {
	Format          string `json:"format"`
	VirtualSize     int64  `json:"virtual-size"`
	ActualSize      int64  `json:"actual-size"`
	BackingFilename string `json:"backing-filename"`
	FullBacking     string `json:"full-backing-filename"`
	DirtyFlag       bool   `json:"dirty-flag"`
	FormatSpecific  struct {
		Type string          `json:"type"`
		Data json.RawMessage `json:"data"`
	} `json:"format-specific"`
}

// Inspect reads the image's metadata with qemu-img (never opening backing files, under limits)
// and refuses what Kumo does not import.
func Inspect(ctx context.Context, path string) (Info, error) { return inspect(ctx, path, "", "") }

// inspect is Inspect that also refuses content whose format is not the one the source's name or
// Content-Type claims (checked first: it names the mismatch, the likelier story).
func inspect(ctx context.Context, path, name, contentType string) (Info, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return Info{}, err
	}
	// "file:" forces the file protocol: the name is never read as a protocol or json: URL.
	out, err := limitedQemuImg(ctx, "info", "--output=json", "file:"+abs)
	if err != nil {
		return Info{}, refuse("qemu-img cannot read the image: %s", lastLine(err.Error()))
	}
	var raw qemuImgInfo
	if err := json.Unmarshal(out, &raw); err != nil {
		return Info{}, fmt.Errorf("qemu-img info output: %w", err)
	}
	if err := checkClaims(raw.Format, name, contentType); err != nil {
		return Info{}, err
	}
	if err := checkInfo(raw, abs); err != nil {
		return Info{}, err
	}
	if raw.Format == "raw" {
		// qemu-img rounds a raw image's size up to whole sectors; the file tells the truth.
		st, err := os.Stat(abs)
		if err != nil {
			return Info{}, err
		}
		if st.Size()%512 != 0 {
			return Info{}, refuse("a raw image must be a whole number of 512-byte sectors; this one is %d bytes", st.Size())
		}
	}
	if raw.Format != "raw" {
		if _, err := limitedQemuImg(ctx, "check", "-q", "-f", raw.Format, "file:"+abs); err != nil {
			return Info{}, refuse("%s image is corrupt or truncated: %s", raw.Format, lastLine(err.Error()))
		}
	}
	return Info{Format: raw.Format, VirtualSize: raw.VirtualSize, ActualSize: raw.ActualSize}, nil
}

// checkInfo applies the refusal rules to qemu-img's report.
func checkInfo(raw qemuImgInfo, path string) error {
	allowed := false
	for _, f := range AllowedFormats {
		allowed = allowed || raw.Format == f
	}
	if !allowed {
		return refuse("format %q is not accepted (accepted: %s)", raw.Format, strings.Join(AllowedFormats, ", "))
	}
	if raw.BackingFilename != "" || raw.FullBacking != "" {
		return refuse("it refers to a backing file (%q): only self-contained images are imported", raw.BackingFilename)
	}
	if raw.VirtualSize <= 0 {
		return refuse("its virtual size is %d bytes", raw.VirtualSize)
	}
	if raw.VirtualSize > MaxVirtualSize {
		return refuse("its virtual size of %s is absurd (limit %s)", HumanBytes(raw.VirtualSize), HumanBytes(MaxVirtualSize))
	}
	switch raw.FormatSpecific.Type {
	case "qcow2":
		var d struct {
			DataFile string `json:"data-file"`
			Corrupt  bool   `json:"corrupt"`
		}
		_ = json.Unmarshal(raw.FormatSpecific.Data, &d)
		if d.DataFile != "" {
			return refuse("it keeps its data in an external file (%q)", d.DataFile)
		}
		if d.Corrupt {
			return refuse("qcow2 image is marked corrupt")
		}
	case "vmdk":
		var d struct {
			CreateType string `json:"create-type"`
			Extents    []struct {
				Filename string `json:"filename"`
			} `json:"extents"`
		}
		_ = json.Unmarshal(raw.FormatSpecific.Data, &d)
		for _, e := range d.Extents {
			name := e.Filename
			if !filepath.IsAbs(name) {
				name = filepath.Join(filepath.Dir(path), name)
			}
			if filepath.Clean(name) != filepath.Clean(path) {
				return refuse("VMDK extent %q points outside the image file", e.Filename)
			}
		}
	}
	return nil
}

// limitedQemuImg runs qemu-img under CPU and address-space limits.
func limitedQemuImg(ctx context.Context, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, inspectTimeout)
	defer cancel()
	full := append([]string{"--cpu=" + strconv.Itoa(inspectCPUSeconds), "--as=" + strconv.Itoa(inspectMemory), "qemu-img"}, args...)
	cmd := exec.CommandContext(ctx, "prlimit", full...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("qemu-img %s: %v: %s", args[0], err, strings.TrimSpace(stderr.String()))
	}
	return out, nil
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndex(s, "\n"); i >= 0 {
		s = s[i+1:]
	}
	return s
}

// HumanBytes writes a size in binary units for messages, e.g. "64.0MiB".
func HumanBytes(b int64) string {
	units := []string{"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"}
	v, i := float64(b), 0
	for v >= 1024 && i < len(units)-1 {
		v /= 1024
		i++
	}
	return strconv.FormatFloat(v, 'f', 1, 64) + units[i]
}
