package apiserver

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	genericapirequest "k8s.io/apiserver/pkg/endpoints/request"
	"k8s.io/apiserver/pkg/registry/rest"

	"kumo.dev/kumo/internal/apiserver/registry"
	"kumo.dev/kumo/internal/auth"
	"kumo.dev/kumo/internal/storage/importer"
	apps "kumo.dev/kumo/pkg/apis/apps/v1alpha1"
	kumo "kumo.dev/kumo/pkg/apis/kumo/v1alpha1"
)

// ConditionUploaded says a source.upload disk received its content.
const ConditionUploaded = "Uploaded"

// uploadREST serves vmdisks/NAME/upload: a tenant POSTs the image (any accepted format, gzip or
// xz), the server stages it and refuses it unless inspection passes; the node that materializes
// the disk GETs it from here, like any other import.
type uploadREST struct {
	store    *registry.Storage
	resource schema.GroupResource
	dir      string
	// accepts says whether the object takes an upload now (nil) or why not.
	accepts func(obj runtime.Object) error
	// uploaded records a received upload in the object's status.
	uploaded func(obj runtime.Object, msg string, info importer.Info)
}

func diskUploads(disks *registry.Storage, dir string) *uploadREST {
	return &uploadREST{store: disks, resource: apps.Resource("vmdisks"), dir: dir,
		accepts: func(obj runtime.Object) error {
			d := obj.(*apps.VMDisk)
			if d.Spec.Source.Upload == nil {
				return errors.New("disk does not take uploads: its spec.source is not upload")
			}
			if d.Status.Phase == apps.DiskReady {
				return errors.New("disk already holds its content")
			}
			return nil
		},
		uploaded: func(obj runtime.Object, msg string, _ importer.Info) {
			d := obj.(*apps.VMDisk)
			if d.Status.Phase == apps.DiskFailed {
				d.Status.Phase = apps.DiskPending // the new content gets a new chance
			}
			meta.SetStatusCondition(&d.Status.Conditions, metav1.Condition{Type: ConditionUploaded, Status: metav1.ConditionTrue, Reason: "Uploaded", Message: msg, ObservedGeneration: d.Generation})
		},
	}
}

func imageUploads(images *registry.Storage, dir string) *uploadREST {
	return &uploadREST{store: images, resource: kumo.Resource("goldenimages"), dir: dir,
		accepts: func(obj runtime.Object) error {
			if obj.(*kumo.GoldenImage).Spec.Source.Upload == nil {
				return errors.New("golden image does not take uploads: its spec.source is not upload")
			}
			return nil
		},
		uploaded: func(obj runtime.Object, msg string, info importer.Info) {
			g := obj.(*kumo.GoldenImage)
			g.Status.Phase, g.Status.Format = kumo.GoldenImageReady, info.Format
			g.Status.Size = resource.NewQuantity(info.VirtualSize, resource.BinarySI)
			meta.SetStatusCondition(&g.Status.Conditions, metav1.Condition{Type: ConditionUploaded, Status: metav1.ConditionTrue, Reason: "Uploaded", Message: msg, ObservedGeneration: g.Generation})
		},
	}
}

var _ rest.Connecter = &uploadREST{}

func (u *uploadREST) New() runtime.Object                               { return u.store.New() }
func (u *uploadREST) Destroy()                                          {}
func (u *uploadREST) NewConnectOptions() (runtime.Object, bool, string) { return nil, false, "" }
func (u *uploadREST) ConnectMethods() []string {
	return []string{http.MethodGet, http.MethodPost, http.MethodPut}
}

func (u *uploadREST) Connect(ctx context.Context, name string, _ runtime.Object, responder rest.Responder) (http.Handler, error) {
	got, err := u.store.Get(ctx, name, &metav1.GetOptions{})
	if err != nil {
		return nil, err
	}
	ns, _ := genericapirequest.NamespaceFrom(ctx)
	if ns == "" {
		ns = "_cluster"
	}
	user, _ := genericapirequest.UserFrom(ctx)
	isNode := user != nil && auth.NodeOf(user) != ""
	path := filepath.Join(u.dir, u.resource.Resource, ns, name+".img")
	sub := schema.GroupResource{Group: u.resource.Group, Resource: u.resource.Resource + "/upload"}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.Method == http.MethodGet && isNode:
			if _, err := os.Stat(path); err != nil {
				responder.Error(apierrors.NewNotFound(sub, name))
				return
			}
			http.ServeFile(w, r, path)
		case r.Method == http.MethodGet:
			responder.Error(apierrors.NewForbidden(sub, name, errors.New("uploads are read by nodes only")))
		case isNode:
			responder.Error(apierrors.NewForbidden(sub, name, errors.New("nodes do not upload")))
		default:
			if err := u.accepts(got); err != nil {
				responder.Error(apierrors.NewConflict(u.resource, name, err))
				return
			}
			msg, info, err := u.receive(r.Context(), r.Body, path)
			if err != nil {
				responder.Error(err)
				return
			}
			_ = update(ctx, u.store.Status, name, func(obj runtime.Object) { u.uploaded(obj, msg, info) })
			responder.Object(http.StatusOK, &metav1.Status{Status: metav1.StatusSuccess, Message: msg})
		}
	}), nil
}

// receive stages an upload and inspects it; a refused image is removed.
func (u *uploadREST) receive(ctx context.Context, body io.Reader, path string) (string, importer.Info, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return "", importer.Info{}, err
	}
	tmp := path + ".receiving"
	defer os.Remove(tmp)
	if err := importer.Decompress(ctx, body, tmp); err != nil {
		if importer.IsRefused(err) {
			return "", importer.Info{}, apierrors.NewBadRequest(err.Error())
		}
		return "", importer.Info{}, fmt.Errorf("receive upload: %w", err)
	}
	info, err := importer.Inspect(ctx, tmp)
	if err != nil {
		if importer.IsRefused(err) {
			return "", importer.Info{}, apierrors.NewBadRequest(err.Error())
		}
		return "", importer.Info{}, err
	}
	// The staged upload must outlive a crash of the server until a node has fetched it.
	if err := syncFile(tmp); err != nil {
		return "", importer.Info{}, err
	}
	if err := os.Rename(tmp, path); err != nil {
		return "", importer.Info{}, err
	}
	return fmt.Sprintf("uploaded a %s image of %d bytes (virtual size)", info.Format, info.VirtualSize), info, nil
}

func syncFile(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}
