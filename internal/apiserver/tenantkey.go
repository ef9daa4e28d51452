package apiserver

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	apimachineryvalidation "k8s.io/apimachinery/pkg/api/validation"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/validation/field"
	genericapirequest "k8s.io/apiserver/pkg/endpoints/request"
	"k8s.io/apiserver/pkg/registry/rest"

	"kumo.dev/kumo/internal/apiserver/registry"
	"kumo.dev/kumo/internal/auth"
	apps "kumo.dev/kumo/pkg/apis/apps/v1alpha1"
	kumo "kumo.dev/kumo/pkg/apis/kumo/v1alpha1"
)

func tenantKeyKind() *registry.Kind {
	validate := func(_ context.Context, o runtime.Object) field.ErrorList {
		k := o.(*kumo.TenantKey)
		errs := apimachineryvalidation.ValidateObjectMeta(&k.ObjectMeta, false, apimachineryvalidation.NameIsDNSLabel, field.NewPath("metadata"))
		if raw, err := base64.StdEncoding.DecodeString(k.Key); err != nil || len(raw) < 32 {
			errs = append(errs, field.Invalid(field.NewPath("key"), "<hidden>", "must be the base64 of at least 32 random bytes"))
		}
		return errs
	}
	return &registry.Kind{
		Resource: kumo.Resource("tenantkeys"), Singular: "tenantkey", Version: kumo.SchemeGroupVersion.Version,
		New:      func() runtime.Object { return &kumo.TenantKey{} },
		NewList:  func() runtime.Object { return &kumo.TenantKeyList{} },
		Validate: validate,
		ValidateUpdate: func(ctx context.Context, o, old runtime.Object) field.ErrorList {
			if o.(*kumo.TenantKey).Key != old.(*kumo.TenantKey).Key {
				return field.ErrorList{field.Forbidden(field.NewPath("key"), "a tenant's key never changes: its disks are encrypted with it")}
			}
			return validate(ctx, o)
		},
		Table: registry.Table{},
	}
}

// encryptionConfig writes (once) the encryption-at-rest configuration that keeps tenant keys
// encrypted in etcd with a secretbox key of this server, and returns its path.
func encryptionConfig(pkiDir string) (string, error) {
	path := filepath.Join(pkiDir, "encryption.yaml")
	if _, err := os.Stat(path); err == nil {
		return path, nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return "", err
	}
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return "", err
	}
	cfg := fmt.Sprintf(`apiVersion: apiserver.config.k8s.io/v1
kind: EncryptionConfiguration
resources:
  - resources: ["tenantkeys.kumo.dev"]
    providers:
      - secretbox:
          keys:
            - name: key1
              secret: %s
      - identity: {}
`, base64.StdEncoding.EncodeToString(key))
	return path, os.WriteFile(path, []byte(cfg), 0o600)
}

// diskKeyREST serves GET vminstances/NAME/diskkey and vmdisks/NAME/diskkey: the tenant's disk
// key, to the one node the object is on — the node a VM is bound to (it opens the VM's disks) or
// the node a disk is placed on by the scheduler (it prepares the disk before any VM uses it) — and
// to no one else.
type diskKeyREST struct {
	resource      schema.GroupResource
	objects, keys *registry.Storage
	// nodeOf says which node the object is on.
	nodeOf func(runtime.Object) string
	// only and on word the refusals: "only the node running the VM gets its disk key",
	// "the VM is bound to" node X, not Y.
	only, on string
}

var (
	_ rest.Getter                   = &diskKeyREST{}
	_ rest.GroupVersionKindProvider = &diskKeyREST{}
)

func vmDiskKey(vms, keys *registry.Storage) *diskKeyREST {
	return &diskKeyREST{resource: apps.Resource("vminstances/diskkey"), objects: vms, keys: keys,
		nodeOf: func(obj runtime.Object) string { return obj.(*apps.VMInstance).Status.Node },
		only:   "only the node running the VM gets its disk key", on: "the VM is bound to"}
}

func placedDiskKey(disks, keys *registry.Storage) *diskKeyREST {
	return &diskKeyREST{resource: apps.Resource("vmdisks/diskkey"), objects: disks, keys: keys,
		nodeOf: func(obj runtime.Object) string { return obj.(*apps.VMDisk).Status.Node },
		only:   "only the node the disk is placed on gets its disk key", on: "the disk is placed on"}
}

func (r *diskKeyREST) New() runtime.Object { return &kumo.TenantKey{} }
func (r *diskKeyREST) Destroy()            {}

func (r *diskKeyREST) Get(ctx context.Context, name string, _ *metav1.GetOptions) (runtime.Object, error) {
	u, _ := genericapirequest.UserFrom(ctx)
	node := ""
	if u != nil {
		node = auth.NodeOf(u)
	}
	if node == "" {
		return nil, apierrors.NewForbidden(r.resource, name, errors.New(r.only))
	}
	got, err := r.objects.Get(ctx, name, &metav1.GetOptions{})
	if err != nil {
		return nil, err
	}
	if on := r.nodeOf(got); on != node {
		return nil, apierrors.NewForbidden(r.resource, name, fmt.Errorf("%s node %q, not %q", r.on, on, node))
	}
	m, err := meta.Accessor(got)
	if err != nil {
		return nil, err
	}
	tenant := kumo.TenantOfNamespace(m.GetNamespace())
	key, err := r.keys.Get(genericapirequest.WithNamespace(ctx, ""), tenant, &metav1.GetOptions{})
	if err != nil {
		return nil, apierrors.NewServiceUnavailable(fmt.Sprintf("the disk key of tenant %s is not ready: %v", tenant, err))
	}
	return key, nil
}

// GroupVersionKind says the subresource returns a kumo.dev TenantKey, like deployments/scale
// returns an autoscaling Scale.
func (r *diskKeyREST) GroupVersionKind(schema.GroupVersion) schema.GroupVersionKind {
	return kumo.SchemeGroupVersion.WithKind("TenantKey")
}
