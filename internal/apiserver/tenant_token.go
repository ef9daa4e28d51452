package apiserver

import (
	"context"
	"fmt"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/apiserver/pkg/registry/rest"

	"kumo.dev/kumo/internal/auth"
	kumo "kumo.dev/kumo/pkg/apis/kumo/v1alpha1"
)

const defaultTokenLifetime = 365 * 24 * time.Hour

// tenantTokenREST serves POST tenants/NAME/token: it issues a bearer token for a user of the
// tenant, like Kubernetes' serviceaccounts/NAME/token. Nothing is stored.
type tenantTokenREST struct {
	tenants rest.Getter
	signer  *auth.Signer
}

var (
	_ rest.NamedCreater = &tenantTokenREST{}
	_ rest.Storage      = &tenantTokenREST{}
)

func (r *tenantTokenREST) New() runtime.Object { return &kumo.TenantToken{} }
func (r *tenantTokenREST) Destroy()            {}

func (r *tenantTokenREST) Create(ctx context.Context, name string, obj runtime.Object, createValidation rest.ValidateObjectFunc, _ *metav1.CreateOptions) (runtime.Object, error) {
	req := obj.(*kumo.TenantToken)
	var errs field.ErrorList
	if req.Spec.User == "" {
		errs = append(errs, field.Required(field.NewPath("spec", "user"), "the user's name"))
	} else if msgs := validation.IsQualifiedName(req.Spec.User); len(msgs) > 0 {
		errs = append(errs, field.Invalid(field.NewPath("spec", "user"), req.Spec.User, msgs[0]))
	}
	lifetime, ferr := auth.Lifetime(req.Spec.ExpirationSeconds, defaultTokenLifetime, auth.MaxTokenLifetime, field.NewPath("spec", "expirationSeconds"))
	if ferr != nil {
		errs = append(errs, ferr)
	}
	if len(errs) > 0 {
		return nil, apierrors.NewInvalid(kumo.SchemeGroupVersion.WithKind("TenantToken").GroupKind(), name, errs)
	}
	if createValidation != nil {
		if err := createValidation(ctx, obj); err != nil {
			return nil, err
		}
	}
	got, err := r.tenants.Get(ctx, name, &metav1.GetOptions{})
	if err != nil {
		return nil, err
	}
	t := got.(*kumo.Tenant)
	if t.DeletionTimestamp != nil {
		return nil, apierrors.NewConflict(kumo.Resource("tenants"), name, fmt.Errorf("tenant is being deleted"))
	}
	expiry := time.Now().Add(lifetime)
	token, err := r.signer.Sign(auth.TenantClaims(req.Spec.User, t.Name, string(t.UID), expiry))
	if err != nil {
		return nil, fmt.Errorf("sign token for %s of tenant %s: %w", req.Spec.User, name, err)
	}
	out := req.DeepCopy()
	out.Name = name
	out.Status = kumo.TenantTokenStatus{Token: token, ExpirationTimestamp: metav1.NewTime(expiry.Truncate(time.Second))}
	return out, nil
}
