package importer

import (
	"mime"
	"net/url"
	"path"
	"strings"
)

// What a file name's extension says its content is (after any .gz or .xz). Extensions that
// name several formats (.img is raw for some vendors, qcow2 for others) claim nothing.
var extensionFormats = map[string]string{
	".qcow2": "qcow2",
	".raw":   "raw",
	".iso":   "raw", // an ISO is a raw image to qemu-img
	".vmdk":  "vmdk",
	".ova":   "vmdk", // Kumo imports an OVA's VMDK disk
	".vhdx":  "vhdx",
	".vdi":   "vdi",
}

// What a Content-Type says. Servers derive it from the file name, so only types of unambiguous
// extensions claim a format: application/x-raw-disk-image, which the shared MIME database (and
// Go's file server) gives every .img, claims nothing, since many .img files are qcow2 (Ubuntu's
// cloud images). Generic types (application/octet-stream) and compression types claim nothing.
var contentTypeFormats = map[string]string{
	"application/x-qemu-disk":       "qcow2",
	"application/x-cd-image":        "raw",
	"application/x-iso9660-image":   "raw",
	"application/x-vmdk-disk":       "vmdk",
	"application/x-vdi-disk":        "vdi",
	"application/x-vhdx-disk":       "vhdx",
	"application/x-virtualbox-vmdk": "vmdk",
	"application/x-virtualbox-vdi":  "vdi",
	"application/x-virtualbox-vhdx": "vhdx",
	"application/x-virtualbox-ova":  "vmdk",
	"application/ovf":               "vmdk", // an OVA; Kumo imports its VMDK disk
}

// urlName is the last element of a URL's path ("" when it has none).
func urlName(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return ""
	}
	return path.Base(u.Path)
}

// nameFormat is the format a file name claims and the extension that claims it.
func nameFormat(name string) (format, ext string) {
	lower := strings.ToLower(name)
	for _, z := range []string{".gz", ".xz"} {
		lower = strings.TrimSuffix(lower, z)
	}
	ext = path.Ext(lower)
	return extensionFormats[ext], ext
}

// checkClaims refuses content whose format is not the one its name or its Content-Type claims:
// a file named .qcow2 whose bytes qemu-img reads as raw is not a disk image but something else
// (an error page, a truncated or corrupt download), and importing it as raw would hand the
// guest garbage.
func checkClaims(format, name, contentType string) error {
	if want, ext := nameFormat(name); want != "" && want != format {
		return refuse("named %s but content is %s", ext, format)
	}
	if contentType != "" {
		mt, _, err := mime.ParseMediaType(contentType)
		if err == nil {
			if want := contentTypeFormats[strings.ToLower(mt)]; want != "" && want != format {
				return refuse("served as %s (%s) but content is %s", mt, want, format)
			}
		}
	}
	return nil
}
