package agent

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"

	"kumo.dev/kumo/internal/storage/importer"
	kumo "kumo.dev/kumo/pkg/apis/kumo/v1alpha1"
)

// cacheImages brings every golden image the API lists into this node's images directory (once),
// inspected like any import and converted to qcow2; the node's image list then advertises it.
func (a *Agent) cacheImages(ctx context.Context) {
	for _, obj := range a.images.GetStore().List() {
		g := obj.(*kumo.GoldenImage)
		if g.Status.Phase == kumo.GoldenImageFailed || (g.Spec.Source.Upload != nil && g.Status.Phase != kumo.GoldenImageReady) {
			continue // nothing to fetch yet, or refused already
		}
		dst := a.local.ImagePath(g.Name)
		if _, err := os.Stat(dst); err == nil {
			continue
		}
		if err := a.cacheImage(ctx, g, dst); err != nil {
			slog.Warn("cache golden image", "image", g.Name, "err", err)
			if importer.IsRefused(err) {
				a.reportImage(ctx, g.Name, func(cur *kumo.GoldenImage) {
					cur.Status.Phase = kumo.GoldenImageFailed
					meta.SetStatusCondition(&cur.Status.Conditions, metav1.Condition{Type: "Imported", Status: metav1.ConditionFalse, Reason: "Refused", Message: err.Error(), ObservedGeneration: cur.Generation})
				})
			}
		}
	}
}

func (a *Agent) cacheImage(ctx context.Context, g *kumo.GoldenImage, dst string) error {
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	dl := dst + ".download"
	defer os.Remove(dl)
	fetch := importer.Stream(func(ctx context.Context) (io.ReadCloser, int64, error) {
		rc, err := a.c.Kumo.Get().Resource("goldenimages").Name(g.Name).SubResource("upload").Stream(ctx)
		return rc, 0, err
	})
	if g.Spec.Source.HTTP != nil {
		fetch = importer.URL(g.Spec.Source.HTTP.URL)
	}
	info, err := importer.Fetch(ctx, fetch, dl, nil)
	if err != nil {
		return err
	}
	tmp := dst + ".converting"
	defer os.Remove(tmp)
	if err := importer.Convert(ctx, dl, info, importer.Target{Args: []string{"-O", "qcow2", tmp}}, nil); err != nil {
		return err
	}
	if err := os.Rename(tmp, dst); err != nil {
		return err
	}
	slog.Info("golden image cached", "image", g.Name, "format", info.Format, "size", info.VirtualSize)
	if g.Status.Phase != kumo.GoldenImageReady {
		a.reportImage(ctx, g.Name, func(cur *kumo.GoldenImage) {
			cur.Status.Phase, cur.Status.Format = kumo.GoldenImageReady, info.Format
			cur.Status.Size = resource.NewQuantity(info.VirtualSize, resource.BinarySI)
			meta.SetStatusCondition(&cur.Status.Conditions, metav1.Condition{Type: "Imported", Status: metav1.ConditionTrue, Reason: "Imported",
				Message: fmt.Sprintf("imported by node %s", a.opts.Node), ObservedGeneration: cur.Generation})
		})
	}
	return nil
}

// goldenID names the current content of a golden image: a prefix of its GoldenImage's UID, or,
// for an image only this node's images directory provides, "f" and a prefix of the file's
// SHA-256 (remembered while the file's size and time stay the same). "" when there is neither.
func (a *Agent) goldenID(name string) string {
	if obj, ok, err := a.images.GetStore().GetByKey(name); err == nil && ok {
		uid := string(obj.(*kumo.GoldenImage).UID)
		return uid[:min(8, len(uid))]
	}
	path := a.local.ImagePath(name)
	st, err := os.Stat(path)
	if err != nil {
		return ""
	}
	a.fileIDsMu.Lock()
	defer a.fileIDsMu.Unlock()
	if id, ok := a.fileIDs[path]; ok && id.size == st.Size() && id.mtime.Equal(st.ModTime()) {
		return id.id
	}
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return ""
	}
	id := "f" + hex.EncodeToString(h.Sum(nil))[:8]
	if a.fileIDs == nil {
		a.fileIDs = map[string]fileID{}
	}
	a.fileIDs[path] = fileID{size: st.Size(), mtime: st.ModTime(), id: id}
	return id
}

// fileID is a golden image file's content ID, valid while its size and time stay the same.
type fileID struct {
	size  int64
	mtime time.Time
	id    string
}

func (a *Agent) reportImage(ctx context.Context, name string, mutate func(*kumo.GoldenImage)) {
	err := retry.RetryOnConflict(retry.DefaultBackoff, func() error {
		cur := &kumo.GoldenImage{}
		if err := a.c.Kumo.Get().Resource("goldenimages").Name(name).Do(ctx).Into(cur); err != nil {
			return err
		}
		mutate(cur)
		return a.c.Kumo.Put().Resource("goldenimages").Name(name).SubResource("status").Body(cur).Do(ctx).Error()
	})
	if err != nil && !errors.Is(err, context.Canceled) {
		slog.Warn("report golden image status", "image", name, "err", err)
	}
}
