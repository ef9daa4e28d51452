package e2e

import (
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"

	"k8s.io/apimachinery/pkg/api/resource"
)

func execKumo(ctx context.Context, kc string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, bins.kumo, args...)
	cmd.Env = append(os.Environ(), "KUBECONFIG="+kc)
	return cmd
}

func ioReadFull(r io.Reader, buf []byte) (int, error) { return io.ReadFull(r, buf) }

func resourceGi(n int64) resource.Quantity { return *resource.NewQuantity(n<<30, resource.BinarySI) }

// removeImage deletes a golden image a test cached into the shared images directory.
func removeImage(name string) { _ = os.Remove(filepath.Join(imagesDir(), name+".qcow2")) }
