package apiserver

import (
	"context"
	"strings"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"

	kumo "kumo.dev/kumo/pkg/apis/kumo/v1alpha1"
)

func TestTenantTokenLifetimeIsBounded(t *testing.T) {
	r := &tenantTokenREST{} // refused before the tenant is looked up or anything signed
	for _, secs := range []int64{9300000000000, 9223372037, 31536001, 599, -5} {
		req := &kumo.TenantToken{Spec: kumo.TenantTokenSpec{User: "alice", ExpirationSeconds: &secs}}
		_, err := r.Create(context.Background(), "acme", req, nil, nil)
		if !apierrors.IsInvalid(err) {
			t.Fatalf("expirationSeconds %d: %v, want 422", secs, err)
		}
		st := err.(apierrors.APIStatus).Status()
		if st.Details == nil || len(st.Details.Causes) != 1 || st.Details.Causes[0].Field != "spec.expirationSeconds" ||
			!strings.Contains(st.Details.Causes[0].Message, "between 600") {
			t.Errorf("expirationSeconds %d: %+v", secs, st.Details)
		}
	}
}
