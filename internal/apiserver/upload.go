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
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	genericapirequest "k8s.io/apiserver/pkg/endpoints/request"
	"k8s.io/apiserver/pkg/registry/rest"

	"kumo.dev/kumo/internal/apiserver/registry"
	"kumo.dev/kumo/internal/auth"
	"kumo.dev/kumo/internal/storage/importer"
	apps "kumo.dev/kumo/pkg/apis/apps/v1alpha1"
)

// ConditionUploaded says a source.upload disk received its content.
const ConditionUploaded = "Uploaded"

// uploadREST serves vmdisks/NAME/upload: a tenant POSTs the image (any accepted format, gzip or
// xz), the server stages it and refuses it unless inspection passes; the node that materializes
// the disk GETs it from here, like any other import.
type uploadREST struct {
	disks *registry.Storage
	dir   string
}

var _ rest.Connecter = &uploadREST{}

func (u *uploadREST) New() runtime.Object                               { return &apps.VMDisk{} }
func (u *uploadREST) Destroy()                                          {}
func (u *uploadREST) NewConnectOptions() (runtime.Object, bool, string) { return nil, false, "" }
func (u *uploadREST) ConnectMethods() []string {
	return []string{http.MethodGet, http.MethodPost, http.MethodPut}
}

func (u *uploadREST) Connect(ctx context.Context, name string, _ runtime.Object, responder rest.Responder) (http.Handler, error) {
	got, err := u.disks.Get(ctx, name, &metav1.GetOptions{})
	if err != nil {
		return nil, err
	}
	disk := got.(*apps.VMDisk)
	if disk.Spec.Source.Upload == nil {
		return nil, apierrors.NewConflict(apps.Resource("vmdisks"), name, errors.New("disk does not take uploads: its spec.source is not upload"))
	}
	user, _ := genericapirequest.UserFrom(ctx)
	isNode := user != nil && auth.NodeOf(user) != ""
	path := filepath.Join(u.dir, disk.Namespace, disk.Name+".img")
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.Method == http.MethodGet && isNode:
			if _, err := os.Stat(path); err != nil {
				responder.Error(apierrors.NewNotFound(apps.Resource("vmdisks/upload"), name))
				return
			}
			http.ServeFile(w, r, path)
		case r.Method == http.MethodGet:
			responder.Error(apierrors.NewForbidden(apps.Resource("vmdisks/upload"), name, errors.New("uploads are read by nodes only")))
		case isNode:
			responder.Error(apierrors.NewForbidden(apps.Resource("vmdisks/upload"), name, errors.New("nodes do not upload")))
		case disk.Status.Phase == apps.DiskReady:
			responder.Error(apierrors.NewConflict(apps.Resource("vmdisks"), name, errors.New("disk already holds its content")))
		default:
			msg, err := u.receive(r.Context(), r.Body, path)
			if err != nil {
				responder.Error(err)
				return
			}
			_ = update(ctx, u.disks.Status, name, func(obj runtime.Object) {
				d := obj.(*apps.VMDisk)
				if d.Status.Phase == apps.DiskFailed {
					d.Status.Phase = apps.DiskPending // the new content gets a new chance
				}
				meta.SetStatusCondition(&d.Status.Conditions, metav1.Condition{Type: ConditionUploaded, Status: metav1.ConditionTrue, Reason: "Uploaded", Message: msg, ObservedGeneration: d.Generation})
			})
			responder.Object(http.StatusOK, &metav1.Status{Status: metav1.StatusSuccess, Message: msg})
		}
	}), nil
}

// receive stages an upload and inspects it; a refused image is removed.
func (u *uploadREST) receive(ctx context.Context, body io.Reader, path string) (string, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return "", err
	}
	tmp := path + ".receiving"
	defer os.Remove(tmp)
	if err := importer.Decompress(ctx, body, tmp); err != nil {
		if importer.IsRefused(err) {
			return "", apierrors.NewBadRequest(err.Error())
		}
		return "", fmt.Errorf("receive upload: %w", err)
	}
	info, err := importer.Inspect(ctx, tmp)
	if err != nil {
		if importer.IsRefused(err) {
			return "", apierrors.NewBadRequest(err.Error())
		}
		return "", err
	}
	if err := os.Rename(tmp, path); err != nil {
		return "", err
	}
	return fmt.Sprintf("uploaded a %s image of %d bytes (virtual size)", info.Format, info.VirtualSize), nil
}
