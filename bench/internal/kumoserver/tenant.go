package kumoserver

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// CreateTenant runs `kumo tenant create NAME -o FILE` as the administrator and returns the tenant
// user's kubeconfig.
func CreateTenant(ctx context.Context, kumo, adminKubeconfig, name, dir string) (*rest.Config, error) {
	path := filepath.Join(dir, name+".kubeconfig")
	cmd := exec.CommandContext(ctx, kumo, "tenant", "create", name, "-o", path)
	cmd.Env = append(os.Environ(), "KUBECONFIG="+adminKubeconfig, "HOME="+dir)
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("kumo tenant create %s: %w\n%s", name, err, out)
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", path)
	if err != nil {
		return nil, fmt.Errorf("load %s: %w", path, err)
	}
	cfg.QPS, cfg.Burst = 1000, 1000
	return cfg, nil
}

// CopyFile copies src to a new file dst (mode 0600).
func CopyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
