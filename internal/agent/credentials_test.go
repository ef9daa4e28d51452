package agent

import (
	"context"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"kumo.dev/kumo/internal/pki"
	kumo "kumo.dev/kumo/pkg/apis/kumo/v1alpha1"
	"kumo.dev/kumo/pkg/client"
)

// A renewal replaces the token every later request carries and the one in the kubeconfig, so a
// restarted agent starts with it too.
func TestAgentRenewsItsNodeToken(t *testing.T) {
	var mu sync.Mutex
	var seen []string
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.Header.Get("Authorization"))
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		if r.Method == http.MethodPost && r.URL.Path == "/apis/kumo.dev/v1alpha1/nodes/n1/token" {
			_ = json.NewEncoder(w).Encode(&kumo.NodeToken{TypeMeta: kumoTypeMeta("NodeToken"), Status: kumo.TenantTokenStatus{Token: "renewed"}})
			return
		}
		_ = json.NewEncoder(w).Encode(&kumo.Node{TypeMeta: kumoTypeMeta("Node")})
	}))
	defer srv.Close()
	path := filepath.Join(t.TempDir(), "node.kubeconfig")
	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	data, err := pki.Kubeconfig("kumo", srv.URL, caPEM, "kumo:node:n1", pki.Credentials{Token: "issued"}, "")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", path)
	if err != nil {
		t.Fatal(err)
	}
	tok := useRenewableToken(cfg)
	if tok == nil || cfg.BearerToken != "" {
		t.Fatalf("the kubeconfig's token should move into the renewable holder: %v %q", tok, cfg.BearerToken)
	}
	c, err := client.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	a := &Agent{opts: Options{Node: "n1", Kubeconfig: path}, c: c, token: tok}
	ctx := context.Background()
	if err := a.c.Kumo.Get().Resource("nodes").Name("n1").Do(ctx).Error(); err != nil {
		t.Fatal(err)
	}
	if err := a.renewToken(ctx); err != nil {
		t.Fatalf("renew: %v", err)
	}
	if err := a.c.Kumo.Get().Resource("nodes").Name("n1").Do(ctx).Error(); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	want := []string{"Bearer issued", "Bearer issued", "Bearer renewed"}
	if len(seen) != len(want) || seen[0] != want[0] || seen[1] != want[1] || seen[2] != want[2] {
		t.Errorf("Authorization headers = %q, want %q", seen, want)
	}
	mu.Unlock()
	after, err := clientcmd.BuildConfigFromFlags("", path)
	if err != nil {
		t.Fatal(err)
	}
	if after.BearerToken != "renewed" || after.Host != srv.URL {
		t.Errorf("kubeconfig after renewal: token %q host %q, want the renewed token and the same server", after.BearerToken, after.Host)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("kubeconfig after renewal: %v %v, want mode 0600", fi.Mode(), err)
	}
}

func TestCertificateCredentialsAreNotRenewed(t *testing.T) {
	cfg := &rest.Config{Host: "https://x", TLSClientConfig: rest.TLSClientConfig{CertData: []byte("c"), KeyData: []byte("k")}}
	if useRenewableToken(cfg) != nil {
		t.Error("a certificate credential has no token to renew")
	}
}

func kumoTypeMeta(kind string) metav1.TypeMeta {
	return metav1.TypeMeta{APIVersion: kumo.SchemeGroupVersion.String(), Kind: kind}
}
