package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"

	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"

	"kumo.dev/kumo/internal/storage"
	"kumo.dev/kumo/internal/storage/importer"
	kumo "kumo.dev/kumo/pkg/apis/kumo/v1alpha1"
)

// cacheImages keeps this node's golden images true to the API: every GoldenImage gets a copy
// keyed by its UID, inspected like any import and converted to qcow2 (an image imported again
// under the same name is a new UID, hence a new copy), and the copies of deleted or replaced
// images are removed. The node's image list then advertises exactly the images it holds.
func (a *Agent) cacheImages(ctx context.Context) {
	if removed, err := a.golden.Prune(); err != nil {
		slog.Warn("remove stale golden image copies", "err", err)
	} else if len(removed) > 0 {
		slog.Info("removed copies of deleted or replaced golden images", "files", removed)
	}
	for _, obj := range a.images.GetStore().List() {
		g := obj.(*kumo.GoldenImage)
		if g.Status.Phase == kumo.GoldenImageFailed || (g.Spec.Source.Upload != nil && g.Status.Phase != kumo.GoldenImageReady) {
			continue // nothing to fetch yet, or refused already
		}
		if a.golden.Cached(g.Name, string(g.UID)) {
			continue
		}
		if err := a.cacheImage(ctx, g); err != nil {
			slog.Warn("cache golden image", "image", g.Name, "uid", g.UID, "err", err)
			if importer.IsRefused(err) {
				a.reportImage(ctx, g, func(cur *kumo.GoldenImage) {
					cur.Status.Phase = kumo.GoldenImageFailed
					meta.SetStatusCondition(&cur.Status.Conditions, metav1.Condition{Type: "Imported", Status: metav1.ConditionFalse, Reason: "Refused", Message: err.Error(), ObservedGeneration: cur.Generation})
				})
			}
		}
	}
}

// goldenObjects maps the GoldenImages the API holds to their UIDs, for the catalog; ok is false
// until the informer has synced (the catalog then removes nothing).
func (a *Agent) goldenObjects() (map[string]string, bool) {
	if !a.images.HasSynced() {
		return nil, false
	}
	out := map[string]string{}
	for _, obj := range a.images.GetStore().List() {
		g := obj.(*kumo.GoldenImage)
		out[g.Name] = string(g.UID)
	}
	return out, true
}

func (a *Agent) cacheImage(ctx context.Context, g *kumo.GoldenImage) error {
	var info importer.Info
	err := a.golden.Cache(ctx, g.Name, string(g.UID), func(ctx context.Context, s *storage.Scratch, dst string) error {
		src := importer.Source{Networks: a.imageNets}
		if g.Spec.Source.HTTP != nil {
			src.URL = g.Spec.Source.HTTP.URL
		} else {
			src.Fetch = importer.Stream(func(ctx context.Context) (io.ReadCloser, int64, error) {
				rc, err := a.c.Kumo.Get().Resource("goldenimages").Name(g.Name).SubResource("upload").Stream(ctx)
				return rc, 0, err
			})
		}
		dl := s.Path("download")
		var err error
		if info, err = importer.Fetch(ctx, src, dl, nil); err != nil {
			return err
		}
		if src.Fetch != nil {
			// The upload is fetched by name: make sure it is the content of this object, not of
			// one imported again under the same name meanwhile.
			cur := &kumo.GoldenImage{}
			if err := a.c.Kumo.Get().Resource("goldenimages").Name(g.Name).Do(ctx).Into(cur); err != nil {
				return fmt.Errorf("read golden image %s: %w", g.Name, err)
			}
			if cur.UID != g.UID {
				return fmt.Errorf("golden image %s was imported again while this node fetched it", g.Name)
			}
		}
		return importer.Convert(ctx, dl, info, importer.Target{Args: []string{"-O", "qcow2", dst}}, nil)
	})
	if err != nil {
		return err
	}
	slog.Info("golden image cached", "image", g.Name, "uid", g.UID, "format", info.Format, "size", info.VirtualSize)
	if g.Status.Phase != kumo.GoldenImageReady {
		a.reportImage(ctx, g, func(cur *kumo.GoldenImage) {
			cur.Status.Phase, cur.Status.Format = kumo.GoldenImageReady, info.Format
			cur.Status.Size = resource.NewQuantity(info.VirtualSize, resource.BinarySI)
			meta.SetStatusCondition(&cur.Status.Conditions, metav1.Condition{Type: "Imported", Status: metav1.ConditionTrue, Reason: "Imported",
				Message: fmt.Sprintf("imported by node %s", a.opts.Node), ObservedGeneration: cur.Generation})
		})
	}
	return nil
}

// reportImage updates a golden image's status, only while the object is the one the node
// looked at (same UID).
func (a *Agent) reportImage(ctx context.Context, g *kumo.GoldenImage, mutate func(*kumo.GoldenImage)) {
	err := retry.RetryOnConflict(retry.DefaultBackoff, func() error {
		cur := &kumo.GoldenImage{}
		if err := a.c.Kumo.Get().Resource("goldenimages").Name(g.Name).Do(ctx).Into(cur); err != nil {
			return err
		}
		if cur.UID != g.UID {
			return nil // imported again meanwhile: this outcome is not the new image's
		}
		if cur.Status.Phase == kumo.GoldenImageReady || cur.Status.Phase == kumo.GoldenImageFailed {
			return nil // decided already (by another node): the API refuses nodes a second say
		}
		mutate(cur)
		return a.c.Kumo.Put().Resource("goldenimages").Name(g.Name).SubResource("status").Body(cur).Do(ctx).Error()
	})
	if err != nil && !errors.Is(err, context.Canceled) {
		slog.Warn("report golden image status", "image", g.Name, "err", err)
	}
}
