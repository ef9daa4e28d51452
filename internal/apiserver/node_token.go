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

// nodeTokenREST serves POST nodes/NAME/token: a bearer token an agent uses as node NAME. The
// Node object need not exist yet: the agent registers it with this token.
type nodeTokenREST struct{ signer *auth.Signer }

var _ rest.NamedCreater = &nodeTokenREST{}

func (r *nodeTokenREST) New() runtime.Object { return &kumo.NodeToken{} }
func (r *nodeTokenREST) Destroy()            {}

func (r *nodeTokenREST) Create(ctx context.Context, name string, obj runtime.Object, createValidation rest.ValidateObjectFunc, _ *metav1.CreateOptions) (runtime.Object, error) {
	req := obj.(*kumo.NodeToken)
	if msgs := validation.IsDNS1123Subdomain(name); len(msgs) > 0 {
		return nil, apierrors.NewInvalid(kumo.SchemeGroupVersion.WithKind("NodeToken").GroupKind(), name,
			field.ErrorList{field.Invalid(field.NewPath("metadata", "name"), name, msgs[0])})
	}
	lifetime := defaultTokenLifetime
	if s := req.Spec.ExpirationSeconds; s != nil {
		if lifetime = time.Duration(*s) * time.Second; lifetime < minTokenLifetime {
			return nil, apierrors.NewInvalid(kumo.SchemeGroupVersion.WithKind("NodeToken").GroupKind(), name,
				field.ErrorList{field.Invalid(field.NewPath("spec", "expirationSeconds"), *s, "must be at least 600")})
		}
	}
	if createValidation != nil {
		if err := createValidation(ctx, obj); err != nil {
			return nil, err
		}
	}
	expiry := time.Now().Add(lifetime)
	token, err := r.signer.Sign(auth.NodeClaims(name, expiry))
	if err != nil {
		return nil, fmt.Errorf("sign token for node %s: %w", name, err)
	}
	out := req.DeepCopy()
	out.Name = name
	out.Status = kumo.TenantTokenStatus{Token: token, ExpirationTimestamp: metav1.NewTime(expiry.Truncate(time.Second))}
	return out, nil
}
