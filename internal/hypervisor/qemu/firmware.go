package qemu

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// ovmfDirs are searched, in order, for an OVMF code/variables pair. A variable so tests can point
// it at fake firmware.
var ovmfDirs = []string{"/usr/share/OVMF", "/usr/share/ovmf", "/usr/share/edk2/ovmf"}

// ovmfPairs are the code and variable-store files that belong together, preferred first. The 4M
// build has room for Windows' secure-boot keys; the code and vars of one build must be used together.
var ovmfPairs = [][2]string{
	{"OVMF_CODE_4M.fd", "OVMF_VARS_4M.fd"},
	{"OVMF_CODE.fd", "OVMF_VARS.fd"},
}

// ovmfSecureBootPairs are Debian's Secure Boot builds (SMM required) with a variable store that
// has Microsoft's keys enrolled (package ovmf: OVMF_CODE_4M.ms.fd is OVMF_CODE_4M.secboot.fd).
var ovmfSecureBootPairs = [][2]string{
	{"OVMF_CODE_4M.ms.fd", "OVMF_VARS_4M.ms.fd"},
	{"OVMF_CODE_4M.secboot.fd", "OVMF_VARS_4M.ms.fd"},
}

// uefiFirmware locates OVMF: the read-only code image and the pristine variable-store template,
// of the Secure Boot build with Microsoft's keys when secureBoot is set.
func uefiFirmware(secureBoot bool) (code, varsTemplate string, err error) {
	pairs := ovmfPairs
	if secureBoot {
		pairs = ovmfSecureBootPairs
	}
	for _, dir := range ovmfDirs {
		for _, p := range pairs {
			c, v := filepath.Join(dir, p[0]), filepath.Join(dir, p[1])
			if fileExists(c) && fileExists(v) {
				return c, v, nil
			}
		}
	}
	return "", "", fmt.Errorf("find OVMF firmware: none of %v in %v (install package ovmf)", pairs, ovmfDirs)
}

func fileExists(path string) bool {
	st, err := os.Stat(path)
	return err == nil && st.Mode().IsRegular()
}

// prepareUEFIVars gives the VM its own writable copy of the OVMF variable store. An existing copy
// is kept: it holds the guest's boot entries and must survive restarts of the VM.
func prepareUEFIVars(cfg *Config) error {
	dst := cfg.UEFIVarsFile()
	if fileExists(dst) {
		return nil
	}
	_, tmpl, err := uefiFirmware(cfg.SecureBoot)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o700); err != nil {
		return fmt.Errorf("UEFI variable store directory for VM %s: %w", cfg.Name, err)
	}
	if err := copyFile(tmpl, dst, 0o600); err != nil {
		return fmt.Errorf("copy UEFI variable store for VM %s: %w", cfg.Name, err)
	}
	return nil
}

// copyFile copies src to dst through a temporary file, so a crash never leaves a truncated dst.
func copyFile(src, dst string, mode os.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	tmp := dst + ".tmp"
	out, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		os.Remove(tmp)
		return err
	}
	if err := out.Close(); err != nil {
		os.Remove(tmp)
		return err
	}
	return os.Rename(tmp, dst)
}
