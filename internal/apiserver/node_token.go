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
	genericapirequest "k8s.io/apiserver/pkg/endpoints/request"
	"k8s.io/apiserver/pkg/registry/rest"

	"kumo.dev/kumo/internal/auth"
	kumo "kumo.dev/kumo/pkg/apis/kumo/v1alpha1"
)

// defaultNodeTokenLifetime is how long a node token lasts unless the request says otherwise; the
// agent renews its token twice a day, so only an agent stopped for a week needs a new one.
const defaultNodeTokenLifetime = 7 * 24 * time.Hour

// defaultNodeDatacenter is the datacenter of a Node registered by an admin's token request (kumod
// agent's default); the agent moves its Node to its own --datacenter when it registers.
const defaultNodeDatacenter = "dc1"

// nodeTokenREST serves POST nodes/NAME/token: a bearer token an agent uses as node NAME, bound to
// the Node object's UID. A Node that does not exist yet is registered now (not Ready, so nothing
// is placed on it until its agent reports): deleting the Node revokes every token issued for it,
// and a Node registered again under the same name does not honour them.
type nodeTokenREST struct {
	nodes  nodeStore
	signer *auth.Signer
	// datacenter is where a Node registered here sits (defaultNodeDatacenter when empty).
	datacenter string
}

var _ rest.NamedCreater = &nodeTokenREST{}

// nodeStore reads and registers Nodes.
type nodeStore interface {
	rest.Getter
	rest.Creater
}

func (r *nodeTokenREST) New() runtime.Object { return &kumo.NodeToken{} }
func (r *nodeTokenREST) Destroy()            {}

func (r *nodeTokenREST) Create(ctx context.Context, name string, obj runtime.Object, createValidation rest.ValidateObjectFunc, _ *metav1.CreateOptions) (runtime.Object, error) {
	req := obj.(*kumo.NodeToken)
	if msgs := validation.IsDNS1123Subdomain(name); len(msgs) > 0 {
		return nil, apierrors.NewInvalid(kumo.SchemeGroupVersion.WithKind("NodeToken").GroupKind(), name,
			field.ErrorList{field.Invalid(field.NewPath("metadata", "name"), name, msgs[0])})
	}
	if u, ok := genericapirequest.UserFrom(ctx); ok && auth.NodeOf(u) != "" {
		// An agent renewing its token gets the default lifetime, never a longer one.
		req.Spec.ExpirationSeconds = nil
	}
	// Bounded before any arithmetic (auth.Lifetime): no value overflows into another lifetime.
	lifetime, ferr := auth.Lifetime(req.Spec.ExpirationSeconds, defaultNodeTokenLifetime, auth.MaxTokenLifetime, field.NewPath("spec", "expirationSeconds"))
	if ferr != nil {
		return nil, apierrors.NewInvalid(kumo.SchemeGroupVersion.WithKind("NodeToken").GroupKind(), name, field.ErrorList{ferr})
	}
	if createValidation != nil {
		if err := createValidation(ctx, obj); err != nil {
			return nil, err
		}
	}
	token, expiry, err := r.issue(ctx, name, lifetime)
	if err != nil {
		return nil, err
	}
	out := req.DeepCopy()
	out.Name = name
	out.Status = kumo.TenantTokenStatus{Token: token, ExpirationTimestamp: metav1.NewTime(expiry.Truncate(time.Second))}
	return out, nil
}

// issue signs a token for node name bound to its Node's UID, registering the Node first when it
// does not exist.
func (r *nodeTokenREST) issue(ctx context.Context, name string, lifetime time.Duration) (string, time.Time, error) {
	node, err := r.node(genericapirequest.WithNamespace(ctx, ""), name)
	if err != nil {
		return "", time.Time{}, err
	}
	expiry := time.Now().Add(lifetime)
	token, err := r.signer.Sign(auth.NodeClaims(name, string(node.UID), expiry))
	if err != nil {
		return "", time.Time{}, fmt.Errorf("sign token for node %s: %w", name, err)
	}
	return token, expiry, nil
}

// node reads Node name from etcd, or registers it.
func (r *nodeTokenREST) node(ctx context.Context, name string) (*kumo.Node, error) {
	got, err := r.nodes.Get(ctx, name, &metav1.GetOptions{})
	if err == nil {
		n := got.(*kumo.Node)
		if n.DeletionTimestamp != nil {
			return nil, apierrors.NewConflict(kumo.Resource("nodes"), name, fmt.Errorf("node is being deleted"))
		}
		return n, nil
	}
	if !apierrors.IsNotFound(err) {
		return nil, fmt.Errorf("read node %s: %w", name, err)
	}
	dc := r.datacenter
	if dc == "" {
		dc = defaultNodeDatacenter
	}
	created, err := r.nodes.Create(ctx, &kumo.Node{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: kumo.NodeSpec{Datacenter: dc}},
		rest.ValidateAllObjectFunc, &metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) { // registered meanwhile (by its agent or another request)
		return r.node(ctx, name)
	}
	if err != nil {
		return nil, fmt.Errorf("register node %s: %w", name, err)
	}
	return created.(*kumo.Node), nil
}
