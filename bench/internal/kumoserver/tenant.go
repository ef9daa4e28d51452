package kumoserver

import (
	"context"
	"fmt"
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
