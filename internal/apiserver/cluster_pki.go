package apiserver

import (
	"fmt"
	"os"
	"path/filepath"

	"kumo.dev/kumo/internal/auth"
	"kumo.dev/kumo/internal/pki"
)

// InitClusterPKI creates in dir the secrets every server of one cluster shares (pki.SharedFiles:
// the CA, the token key, the encryption-at-rest configuration), for `kumod pki init`. It refuses a
// directory that already holds any of them: overwriting a cluster's secrets would lock its
// servers out of each other and of the tenant keys stored in etcd.
func InitClusterPKI(dir string) error {
	for _, f := range pki.SharedFiles {
		if _, err := os.Stat(filepath.Join(dir, f)); err == nil {
			return fmt.Errorf("%s already exists: a cluster's secrets are made once (remove the directory to start a new cluster)", filepath.Join(dir, f))
		}
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create %s: %w", dir, err)
	}
	if _, err := pki.LoadOrCreateCA(dir); err != nil {
		return fmt.Errorf("cluster CA: %w", err)
	}
	if _, err := auth.LoadOrCreateSigner(filepath.Join(dir, "token.key")); err != nil {
		return fmt.Errorf("token key: %w", err)
	}
	if _, err := encryptionConfig(dir); err != nil {
		return fmt.Errorf("encryption at rest: %w", err)
	}
	return nil
}
