package cli

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/spf13/cobra"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"k8s.io/client-go/rest"
	cmdutil "k8s.io/kubectl/pkg/cmd/util"
)

// newUploadCmd builds kumo upload vmdisk NAME --file F, like virtctl image-upload: the image
// streams through the API to the disk's upload subresource, with a progress bar.
func newUploadCmd(f cmdutil.Factory, streams genericiooptions.IOStreams) *cobra.Command {
	var file string
	cmd := &cobra.Command{
		Use:   "upload vmdisk NAME --file FILE",
		Short: "Upload an image (raw, qcow2, vmdk, vhdx, vdi, iso; gzip or xz) into a VMDisk whose source is upload",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if args[0] != "vmdisk" && args[0] != "vmdisks" && args[0] != "vmd" {
				return fmt.Errorf("kumo upload takes vmdisk NAME, not %q", args[0])
			}
			if file == "" {
				return fmt.Errorf("--file is required")
			}
			c, ns, err := vmClient(f)
			if err != nil {
				return err
			}
			msg, err := uploadFile(cmd.Context(), streams, c.Apps.Post().Namespace(ns).Resource("vmdisks").Name(args[1]).SubResource("upload"), file)
			if err != nil {
				return fmt.Errorf("upload to VMDisk %s: %w", args[1], err)
			}
			fmt.Fprintln(streams.Out, "vmdisk.apps.cozystack.io/"+args[1]+": "+msg)
			return nil
		},
	}
	cmd.Flags().StringVar(&file, "file", "", "image file to upload")
	return cmd
}

// uploadFile streams a file as the body of req, drawing a progress bar on standard error, and
// returns the server's message.
func uploadFile(ctx context.Context, streams genericiooptions.IOStreams, req *rest.Request, file string) (string, error) {
	f0, err := os.Open(file)
	if err != nil {
		return "", err
	}
	defer f0.Close()
	st, err := f0.Stat()
	if err != nil {
		return "", err
	}
	body := &progressReader{r: f0}
	done, drawn := make(chan struct{}), make(chan struct{})
	go func() { drawProgress(streams.ErrOut, file, body, st.Size(), done); close(drawn) }()
	res := req.SetHeader("Content-Type", "application/octet-stream").Body(io.Reader(body)).Do(ctx)
	close(done)
	<-drawn
	if err := res.Error(); err != nil {
		return "", err
	}
	status := &metav1.Status{}
	_ = res.Into(status)
	return status.Message, nil
}

type progressReader struct {
	r    io.Reader
	done atomic.Int64
}

func (p *progressReader) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	p.done.Add(int64(n))
	return n, err
}

func drawProgress(w io.Writer, name string, p *progressReader, total int64, done <-chan struct{}) {
	start := time.Now()
	t := time.NewTicker(200 * time.Millisecond)
	defer t.Stop()
	draw := func() {
		n := p.done.Load()
		pct := 100
		if total > 0 {
			pct = int(n * 100 / total)
		}
		bar := strings.Repeat("=", pct/4) + strings.Repeat(" ", 25-pct/4)
		rate := float64(n) / (1 << 20) / time.Since(start).Seconds()
		fmt.Fprintf(w, "\r%s [%s] %3d%%  %.1f MiB/s", name, bar, pct, rate)
	}
	for {
		select {
		case <-done:
			draw()
			fmt.Fprintln(w)
			return
		case <-t.C:
			draw()
		}
	}
}
