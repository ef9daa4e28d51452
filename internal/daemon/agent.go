package daemon

import (
	"context"
	"path/filepath"

	"kumo.dev/kumo/internal/agent"
)

// RunAgent runs a node agent until ctx ends (its VMs keep running).
func RunAgent(ctx context.Context, o agent.Options) error {
	if o.Kubeconfig == "" {
		o.Kubeconfig = filepath.Join(o.DataDir, "node.kubeconfig")
	}
	a, err := agent.New(o)
	if err != nil {
		return err
	}
	return a.Run(ctx)
}
