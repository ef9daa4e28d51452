package apiserver

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	genericapirequest "k8s.io/apiserver/pkg/endpoints/request"
	"k8s.io/apiserver/pkg/registry/rest"

	"kumo.dev/kumo/internal/auth"
	kumo "kumo.dev/kumo/pkg/apis/kumo/v1alpha1"
)

// fakeNodes is an in-memory Node store that gives each created Node a fresh UID.
type fakeNodes struct {
	nodes map[string]*kumo.Node
	n     int
}

func (f *fakeNodes) New() runtime.Object { return &kumo.Node{} }
func (f *fakeNodes) Destroy()            {}

func (f *fakeNodes) Get(_ context.Context, name string, _ *metav1.GetOptions) (runtime.Object, error) {
	if n, ok := f.nodes[name]; ok {
		return n.DeepCopy(), nil
	}
	return nil, apierrors.NewNotFound(kumo.Resource("nodes"), name)
}

func (f *fakeNodes) Create(ctx context.Context, obj runtime.Object, validate rest.ValidateObjectFunc, _ *metav1.CreateOptions) (runtime.Object, error) {
	n := obj.(*kumo.Node).DeepCopy()
	if _, ok := f.nodes[n.Name]; ok {
		return nil, apierrors.NewAlreadyExists(kumo.Resource("nodes"), n.Name)
	}
	f.n++
	n.UID = types.UID("uid-" + string(rune('0'+f.n)))
	f.nodes[n.Name] = n
	return n.DeepCopy(), nil
}

func issueNodeToken(t *testing.T, r *nodeTokenREST, ctx context.Context, name string, seconds *int64) (auth.Claims, error) {
	t.Helper()
	out, err := r.Create(ctx, name, &kumo.NodeToken{Spec: kumo.NodeTokenSpec{ExpirationSeconds: seconds}}, nil, nil)
	if err != nil {
		return auth.Claims{}, err
	}
	return r.signer.Verify(out.(*kumo.NodeToken).Status.Token, time.Now())
}

// A node token names the UID of the Node it was issued for; the Node is registered when absent
// (in the default datacenter, so its agent moves it), and a Node registered again gets a new UID.
func TestNodeTokensAreBoundToTheNodeObject(t *testing.T) {
	signer, err := auth.LoadOrCreateSigner(filepath.Join(t.TempDir(), "token.key"))
	if err != nil {
		t.Fatal(err)
	}
	nodes := &fakeNodes{nodes: map[string]*kumo.Node{}}
	r := &nodeTokenREST{nodes: nodes, signer: signer}
	ctx := genericapirequest.WithUser(context.Background(), admin)
	c, err := issueNodeToken(t, r, ctx, "n2", nil)
	if err != nil {
		t.Fatal(err)
	}
	n := nodes.nodes["n2"]
	if n == nil || n.Spec.Datacenter != defaultNodeDatacenter || c.NodeUID != string(n.UID) || c.User != auth.NodeUserPrefix+"n2" {
		t.Fatalf("token claims %+v for node %+v: want the registered Node's UID", c, n)
	}
	if left := time.Until(time.Unix(c.Expiry, 0)); left > defaultNodeTokenLifetime || left < defaultNodeTokenLifetime-time.Minute {
		t.Errorf("node token lasts %s, want %s", left, defaultNodeTokenLifetime)
	}
	again, err := issueNodeToken(t, r, ctx, "n2", nil)
	if err != nil || again.NodeUID != c.NodeUID {
		t.Errorf("a second token for the same Node: %+v %v, want UID %s", again, err, c.NodeUID)
	}
	delete(nodes.nodes, "n2")
	reborn, err := issueNodeToken(t, r, ctx, "n2", nil)
	if err != nil || reborn.NodeUID == c.NodeUID {
		t.Errorf("a token for a Node registered again: %+v %v, want a new UID", reborn, err)
	}
	overflow := int64(9300000000000)
	if _, err := issueNodeToken(t, r, ctx, "n2", &overflow); !apierrors.IsInvalid(err) {
		t.Errorf("expirationSeconds %d: want 422, got %v", overflow, err)
	}
	// An agent renewing its own token gets the default lifetime whatever it asks for.
	year := int64(365 * 24 * 3600)
	nodeCtx := genericapirequest.WithUser(context.Background(), node1)
	renewed, err := issueNodeToken(t, r, nodeCtx, "n1", &year)
	if err != nil {
		t.Fatal(err)
	}
	if left := time.Until(time.Unix(renewed.Expiry, 0)); left > defaultNodeTokenLifetime {
		t.Errorf("a node asking for a year got a token lasting %s, want at most %s", left, defaultNodeTokenLifetime)
	}
}
