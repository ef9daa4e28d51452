package importer

import (
	"errors"
	"fmt"
	"io"

	apps "kumo.dev/kumo/pkg/apis/apps/v1alpha1"
)

// TooLargeError refuses an image whose bytes (once decompressed) exceed what its destination
// declared: decompression stops at the limit, so a small gzip or xz bomb never writes more.
type TooLargeError struct {
	// Limit is the most bytes the image could have.
	Limit int64
	// Why says where the limit comes from, e.g. "the disk's spec.storage 1Gi".
	Why string
}

func (e *TooLargeError) Error() string {
	return fmt.Sprintf("image refused: it is larger than %s once decompressed, more than %s allows; decompression stopped there",
		HumanBytes(e.Limit), e.Why)
}

// Unwrap makes a TooLargeError a refusal (IsRefused): the image, not the system, is at fault.
func (e *TooLargeError) Unwrap() error { return &RefusedError{Reason: e.Error()} }

// IsTooLarge says whether err refuses an image for its size.
func IsTooLarge(err error) bool {
	var t *TooLargeError
	return errors.As(err, &t)
}

// Limit bounds how many bytes an import may write.
type Limit struct {
	Bytes int64
	Why   string
	// Charge, when set, is called before every write with its size; an error stops the import
	// with that error (a budget shared by several imports, such as the server's upload staging).
	Charge func(n int64) error
}

// noLimit is the bound of an import whose destination declares no size (golden images).
var noLimit = Limit{Bytes: MaxDownload, Why: "the import limit " + HumanBytes(MaxDownload)}

// ForDisk is the bound of an image for a disk of declared bytes (its spec.storage): the disk's
// size plus room for the image format's own metadata (a fully allocated qcow2, VMDK or VHDX is a
// little larger than its virtual size; an OVA adds its descriptor), 1/64 and 16 MiB. An image
// larger than the disk is refused after inspection anyway; this stops the bytes from being
// written in the first place.
func ForDisk(declared int64, what string) Limit {
	b := declared + declared/64 + 16<<20
	if b > MaxDownload || b < 0 {
		b = MaxDownload
	}
	return Limit{Bytes: b, Why: what}
}

func (l Limit) orDefault() Limit {
	if l.Bytes <= 0 {
		return noLimit
	}
	return l
}

func (l Limit) exceeded() error { return &TooLargeError{Limit: l.Bytes, Why: l.Why} }

// DiskLimit is ForDisk of a VMDisk's spec.storage.
func DiskLimit(d *apps.VMDisk) Limit {
	if d.Spec.Storage == nil {
		return noLimit
	}
	return ForDisk(d.Spec.Storage.Value(), "the disk's spec.storage "+d.Spec.Storage.String())
}

// chargedWriter charges every write before making it.
type chargedWriter struct {
	w      io.Writer
	charge func(int64) error
	err    error
}

func (c *chargedWriter) Write(p []byte) (int, error) {
	if err := c.charge(int64(len(p))); err != nil {
		c.err = err
		return 0, err
	}
	return c.w.Write(p)
}
