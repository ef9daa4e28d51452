package apiserver

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metainternalversion "k8s.io/apimachinery/pkg/apis/meta/internalversion"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	genericapirequest "k8s.io/apiserver/pkg/endpoints/request"
	"k8s.io/apiserver/pkg/registry/rest"
	genericapiserver "k8s.io/apiserver/pkg/server"

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
	// nodeMayRead says whether a node may read the staged content (nil: every node may).
	nodeMayRead func(obj runtime.Object, node string) error
	// key, when set, is the key staged uploads of obj are sealed with (upload_seal.go): a
	// tenant's disk is tenant data. Golden images (the administrator's) are staged as they are.
	key func(ctx context.Context, obj runtime.Object) ([]byte, error)
	// consumed, when set, says an object no longer needs its staged upload (a disk that is Ready
	// holds the content): the file is removed when the object's status says so.
	consumed func(obj runtime.Object) bool
	// limit, when set, bounds what an upload of obj may expand to (a disk's spec.storage).
	limit func(obj runtime.Object) importer.Limit
	// staging bounds the bytes staged by all uploads together (staging.go).
	staging *stagingBudget

	mu sync.Mutex
	// receiving holds the objects (by UID) an upload is being received for: one at a time.
	receiving map[types.UID]bool
}

// Staged uploads live under dir/<resource>/<namespace or _cluster>/<UID>.img, received into
// <UID>.img.receiving first (and sealed into <UID>.img.sealed.receiving): a file belongs to one
// object, never to a later one of the same name.
const (
	stagedSuffix    = ".img"
	receivingSuffix = ".receiving"
	sealingSuffix   = ".sealed" + receivingSuffix
)

func (u *uploadREST) stagedPath(ns string, uid types.UID) string {
	if ns == "" {
		ns = "_cluster"
	}
	return filepath.Join(u.dir, u.resource.Resource, ns, string(uid)+stagedSuffix)
}

// begin claims the right to receive an upload for uid; false while another upload runs.
func (u *uploadREST) begin(uid types.UID) bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.receiving == nil {
		u.receiving = map[types.UID]bool{}
	}
	if u.receiving[uid] {
		return false
	}
	u.receiving[uid] = true
	return true
}

func (u *uploadREST) end(uid types.UID) {
	u.mu.Lock()
	defer u.mu.Unlock()
	delete(u.receiving, uid)
}

// forget removes what was staged for a deleted object (the store's AfterDelete hook). An upload
// still being received then fails: its file is gone.
func (u *uploadREST) forget(obj runtime.Object, _ *metav1.DeleteOptions) {
	m, err := meta.Accessor(obj)
	if err != nil {
		return
	}
	path := u.stagedPath(m.GetNamespace(), m.GetUID())
	for _, p := range []string{path, path + receivingSuffix, path + sealingSuffix} {
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			slog.Error("remove the staged upload of a deleted object", "resource", u.resource.String(), "object", m.GetNamespace()+"/"+m.GetName(), "file", p, "err", err)
		}
	}
}

// afterStatus is the status store's AfterUpdate hook: an upload its object has consumed goes.
func (u *uploadREST) afterStatus(obj runtime.Object, _ *metav1.UpdateOptions) {
	if u.consumed == nil || !u.consumed(obj) {
		return
	}
	m, err := meta.Accessor(obj)
	if err != nil {
		return
	}
	path := u.stagedPath(m.GetNamespace(), m.GetUID())
	if err := os.Remove(path); err == nil {
		slog.Info("removed a consumed staged upload", "resource", u.resource.String(), "object", m.GetNamespace()+"/"+m.GetName(), "file", path)
	} else if !errors.Is(err, fs.ErrNotExist) {
		slog.Error("remove a consumed staged upload", "resource", u.resource.String(), "object", m.GetNamespace()+"/"+m.GetName(), "file", path, "err", err)
	}
}

// uploads builds the upload subresources of disks and golden images, staging under dir: staged
// files go with their object, and uploads a stopped server was receiving are removed now.
func (s *Server) uploads(dir string) (disks, images *uploadREST, err error) {
	if err := removeReceiving(dir); err != nil {
		return nil, nil, err
	}
	disks, images = diskUploads(s.stores.vmDisks, s.stores.tenantKeys, dir), imageUploads(s.stores.goldenImages, dir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, nil, fmt.Errorf("upload staging directory: %w", err)
	}
	budget := newStagingBudget(dir, s.stagingLimit)
	disks.staging, images.staging = budget, budget
	for _, u := range []*uploadREST{disks, images} {
		u.store.AfterDelete = u.forget
		if u.consumed != nil {
			u.store.Status.AfterUpdate = u.afterStatus
		}
		hook := "kumo-orphaned-uploads-" + u.resource.Resource
		u := u
		if err := s.generic.AddPostStartHook(hook, func(ctx genericapiserver.PostStartHookContext) error {
			if err := u.removeOrphans(ctx); err != nil {
				slog.Error("clean orphaned uploads", "resource", u.resource.String(), "err", err)
			}
			return nil
		}); err != nil {
			return nil, nil, err
		}
	}
	return disks, images, nil
}

func diskUploads(disks, keys *registry.Storage, dir string) *uploadREST {
	return &uploadREST{store: disks, resource: apps.Resource("vmdisks"), dir: dir,
		key: func(ctx context.Context, obj runtime.Object) ([]byte, error) {
			return tenantKeyOf(ctx, keys, obj.(*apps.VMDisk).Namespace)
		},
		// An upload expands (gzip, xz) at most to the disk's declared size.
		limit: func(obj runtime.Object) importer.Limit { return importer.DiskLimit(obj.(*apps.VMDisk)) },
		consumed: func(obj runtime.Object) bool {
			d := obj.(*apps.VMDisk)
			return d.Spec.Source.Upload != nil && d.Status.Phase == apps.DiskReady
		},
		accepts: func(obj runtime.Object) error {
			d := obj.(*apps.VMDisk)
			if d.Spec.Source.Upload == nil {
				return errors.New("disk does not take uploads: its spec.source is not upload")
			}
			if d.Status.Phase == apps.DiskReady {
				return errors.New("disk already holds its content")
			}
			// Once an upload is received a node fetches it: a second one would replace the
			// staged file under it, so the disk would keep whichever the node happened to read.
			// A disk whose preparation failed takes a new upload.
			if meta.IsStatusConditionTrue(d.Status.Conditions, ConditionUploaded) && d.Status.Phase != apps.DiskFailed {
				return fmt.Errorf("disk already received an upload and is being prepared (phase %s); delete it and create it again to upload other content", d.Status.Phase)
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
		// A tenant's uploaded content goes, like the disk key, to the node that prepares the
		// disk only.
		nodeMayRead: func(obj runtime.Object, node string) error {
			if d := obj.(*apps.VMDisk); d.Status.Node != node {
				return fmt.Errorf("the disk is placed on node %q, not %q", d.Status.Node, node)
			}
			return nil
		},
	}
}

func imageUploads(images *registry.Storage, dir string) *uploadREST {
	return &uploadREST{store: images, resource: kumo.Resource("goldenimages"), dir: dir,
		accepts: func(obj runtime.Object) error {
			g := obj.(*kumo.GoldenImage)
			if g.Spec.Source.Upload == nil {
				return errors.New("golden image does not take uploads: its spec.source is not upload")
			}
			// Nodes key their copies (and the Ceph bases made from them) by the image's UID:
			// new content under the same object would never reach a node that has the old.
			if g.Status.Phase == kumo.GoldenImageReady || meta.IsStatusConditionTrue(g.Status.Conditions, ConditionUploaded) {
				return errors.New("golden image already holds its content; delete it and import it again to change it")
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
	m, err := meta.Accessor(got)
	if err != nil {
		return nil, err
	}
	uid := m.GetUID()
	user, _ := genericapirequest.UserFrom(ctx)
	node := ""
	if user != nil {
		node = auth.NodeOf(user)
	}
	isNode := node != ""
	path := u.stagedPath(m.GetNamespace(), uid)
	sub := schema.GroupResource{Group: u.resource.Group, Resource: u.resource.Resource + "/upload"}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.Method == http.MethodGet && isNode:
			if u.nodeMayRead != nil {
				if err := u.nodeMayRead(got, node); err != nil {
					responder.Error(apierrors.NewForbidden(sub, name, err))
					return
				}
			}
			if _, err := os.Stat(path); err != nil {
				responder.Error(apierrors.NewNotFound(sub, name))
				return
			}
			if u.key == nil {
				http.ServeFile(w, r, path)
				return
			}
			u.serveSealed(ctx, w, responder, got, sub, name, path)
		case r.Method == http.MethodGet:
			responder.Error(apierrors.NewForbidden(sub, name, errors.New("uploads are read by nodes only")))
		case isNode:
			responder.Error(apierrors.NewForbidden(sub, name, errors.New("nodes do not upload")))
		default:
			if err := u.accepts(got); err != nil {
				responder.Error(apierrors.NewConflict(u.resource, name, err))
				return
			}
			if !u.begin(uid) {
				responder.Error(apierrors.NewConflict(u.resource, name, errors.New("another upload to it is in progress; one upload at a time")))
				return
			}
			defer u.end(uid)
			var key []byte
			if u.key != nil {
				k, err := u.key(ctx, got)
				if err != nil {
					responder.Error(err)
					return
				}
				key = k
			}
			limit := importer.Limit{}
			if u.limit != nil {
				limit = u.limit(got)
			}
			msg, info, err := u.receive(r.Context(), r.Body, path, key, string(uid), limit)
			if err != nil {
				responder.Error(err)
				return
			}
			if err := u.record(ctx, name, uid, func(obj runtime.Object) { u.uploaded(obj, msg, info) }); err != nil {
				if apierrors.IsNotFound(err) || apierrors.IsConflict(err) {
					// Deleted (or replaced by a namesake) while the upload ran: nothing may use the file.
					_ = os.Remove(path)
				}
				responder.Error(err)
				return
			}
			responder.Object(http.StatusOK, &metav1.Status{Status: metav1.StatusSuccess, Message: msg})
		}
	}), nil
}

// record writes a received upload into the status of the object it was received for, and of no
// namesake created since.
func (u *uploadREST) record(ctx context.Context, name string, uid types.UID, mutate func(runtime.Object)) error {
	info := rest.DefaultUpdatedObjectInfo(nil, func(ctx context.Context, _, stored runtime.Object) (runtime.Object, error) {
		if m, err := meta.Accessor(stored); err != nil || m.GetUID() != uid {
			return nil, apierrors.NewConflict(u.resource, name, errors.New("it was deleted and created again while the upload ran; upload again"))
		}
		obj := stored.DeepCopyObject()
		mutate(obj)
		return obj, nil
	})
	if _, _, err := u.store.Status.Update(ctx, name, info, nil, rest.ValidateAllObjectUpdateFunc, false, &metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("record the upload in the status of %s %s: %w", u.resource.Resource, name, err)
	}
	return nil
}

// receive stages an upload and inspects it; a refused image is removed. With a key, the staged
// file is sealed for the object uid, and the plaintext exists only while it is inspected.
func (u *uploadREST) receive(ctx context.Context, body io.Reader, path string, key []byte, uid string, limit importer.Limit) (string, importer.Info, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return "", importer.Info{}, err
	}
	var charge *stagingCharge
	kept := int64(0)
	if u.staging != nil {
		c, err := u.staging.begin()
		if err != nil {
			return "", importer.Info{}, err
		}
		charge, limit = c, c.importLimit(limit)
		defer func() { charge.end(kept) }()
	}
	tmp := path + receivingSuffix
	defer os.Remove(tmp)
	if err := importer.DecompressAtMost(ctx, body, tmp, limit); err != nil {
		if isInsufficientStorage(err) {
			var se *apierrors.StatusError
			errors.As(err, &se)
			return "", importer.Info{}, se
		}
		if importer.IsTooLarge(err) {
			return "", importer.Info{}, apierrors.NewRequestEntityTooLargeError(err.Error())
		}
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
	staged := tmp
	if key != nil {
		staged = path + sealingSuffix
		defer os.Remove(staged)
		plain, err := os.Stat(tmp)
		if err != nil {
			return "", importer.Info{}, err
		}
		if charge != nil {
			if err := charge.charge(sealedSize(plain.Size())); err != nil {
				return "", importer.Info{}, err
			}
		}
		if err := sealFile(tmp, staged, key, uid); err != nil {
			return "", importer.Info{}, fmt.Errorf("seal the staged upload: %w", err)
		}
		// The plaintext goes now, not when the request ends.
		if err := os.Remove(tmp); err != nil {
			return "", importer.Info{}, fmt.Errorf("remove the plaintext of a sealed upload: %w", err)
		}
		if charge != nil {
			charge.release(plain.Size())
		}
	} else if err := syncFile(tmp); err != nil {
		// The staged upload must outlive a crash of the server until a node has fetched it
		// (sealFile syncs what it writes).
		return "", importer.Info{}, err
	}
	if err := os.Rename(staged, path); err != nil {
		return "", importer.Info{}, err
	}
	if st, err := os.Stat(path); err == nil {
		kept = st.Size()
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

// removeReceiving deletes the half-received uploads a stopped server left under dir: no upload
// is being received before the server serves.
func removeReceiving(dir string) error {
	err := filepath.WalkDir(dir, func(p string, e fs.DirEntry, err error) error {
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		if e.Type().IsRegular() && strings.HasSuffix(p, receivingSuffix) {
			if err := os.Remove(p); err != nil {
				return err
			}
			slog.Info("removed an upload cut by a restart", "file", p)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("clean interrupted uploads under %s: %w", dir, err)
	}
	return nil
}

// removeOrphans deletes staged uploads whose object is gone (deleted while the server was down,
// or before forget could run). Files are listed before objects, so an upload staged meanwhile
// belongs to an object the list sees.
func (u *uploadREST) removeOrphans(ctx context.Context) error {
	root := filepath.Join(u.dir, u.resource.Resource)
	var staged []string
	err := filepath.WalkDir(root, func(p string, e fs.DirEntry, err error) error {
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err == nil && e.Type().IsRegular() && strings.HasSuffix(p, stagedSuffix) {
			staged = append(staged, p)
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("list staged uploads under %s: %w", root, err)
	}
	if len(staged) == 0 {
		return nil
	}
	list, err := u.store.List(ctx, &metainternalversion.ListOptions{})
	if err != nil {
		return fmt.Errorf("list %s: %w", u.resource, err)
	}
	live := map[string]bool{}
	if err := meta.EachListItem(list, func(o runtime.Object) error {
		m, err := meta.Accessor(o)
		if err == nil {
			live[u.stagedPath(m.GetNamespace(), m.GetUID())] = true
		}
		return err
	}); err != nil {
		return err
	}
	for _, p := range staged {
		if live[p] {
			continue
		}
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("remove orphaned upload: %w", err)
		}
		slog.Info("removed the staged upload of a deleted object", "file", p)
	}
	return nil
}
