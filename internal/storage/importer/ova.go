package importer

import (
	"archive/tar"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strings"
)

// unpackOVA replaces an OVA (a tar archive holding an OVF descriptor and its disks) at p with
// its first VMDK disk, which is then inspected like any image. Other files are not unpacked:
// nothing in the archive names a path on the host. It reports whether p was an OVA.
func unpackOVA(p string) (bool, error) {
	f, err := os.Open(p)
	if err != nil {
		return false, err
	}
	defer f.Close()
	head := make([]byte, 512)
	if n, _ := io.ReadFull(f, head); n < 512 || !bytes.Equal(head[257:262], []byte("ustar")) {
		return false, nil
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return true, err
	}
	tr := tar.NewReader(f)
	var names []string
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return true, refuse("corrupt OVA archive: %v", err)
		}
		names = append(names, h.Name)
		if h.Typeflag != tar.TypeReg || !strings.EqualFold(path.Ext(h.Name), ".vmdk") {
			continue
		}
		if h.Size > MaxDownload {
			return true, refuse("OVA disk %s is larger than %s", h.Name, HumanBytes(MaxDownload))
		}
		disk := p + ".ova-disk"
		out, err := os.OpenFile(disk, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
		if err != nil {
			return true, err
		}
		if _, err := io.Copy(out, tr); err != nil {
			out.Close()
			os.Remove(disk)
			return true, refuse("corrupt OVA archive: disk %s: %v", h.Name, err)
		}
		if err := out.Close(); err != nil {
			os.Remove(disk)
			return true, err
		}
		return true, os.Rename(disk, p)
	}
	return true, refuse("the OVA holds no VMDK disk (files: %s)", strings.Join(names, ", "))
}

// fromOVA is unpackOVA for Fetch: an error names the OVA.
func fromOVA(p string) error {
	if _, err := unpackOVA(p); err != nil {
		return fmt.Errorf("unpack OVA: %w", err)
	}
	return nil
}
