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

// diskKeyREST serves GET vminstances/NAME/diskkey: the tenant's disk key, to the node the VM is
// bound to and to no one else.
type diskKeyREST struct {
	vms, keys *registry.Storage
}

var _ rest.Getter = &diskKeyREST{}

func (r *diskKeyREST) New() runtime.Object { return &kumo.TenantKey{} }
func (r *diskKeyREST) Destroy()            {}

func (r *diskKeyREST) Get(ctx context.Context, name string, _ *metav1.GetOptions) (runtime.Object, error) {
	u, _ := genericapirequest.UserFrom(ctx)
	node := ""
	if u != nil {
		node = auth.NodeOf(u)
	}
	if node == "" {
		return nil, apierrors.NewForbidden(apps.Resource("vminstances/diskkey"), name, errors.New("only the node running the VM gets its disk key"))
	}
	got, err := r.vms.Get(ctx, name, &metav1.GetOptions{})
	if err != nil {
		return nil, err
	}
	vm := got.(*apps.VMInstance)
	if vm.Status.Node != node {
		return nil, apierrors.NewForbidden(apps.Resource("vminstances/diskkey"), name, fmt.Errorf("the VM is bound to node %q, not %q", vm.Status.Node, node))
	}
	tenant := kumo.TenantOfNamespace(vm.Namespace)
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

var _ rest.GroupVersionKindProvider = &diskKeyREST{}
