package apiserver

import (
	"crypto/tls"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"

	"kumo.dev/kumo/internal/pki"
	kumo "kumo.dev/kumo/pkg/apis/kumo/v1alpha1"
)

// TestAgentConnectionsArePooledPerNode: requests to one agent, each looking its transport up as
// a stream request does, share one connection; a new agent certificate gets a new transport.
func TestAgentConnectionsArePooledPerNode(t *testing.T) {
	ca, err := pki.LoadOrCreateCA(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	pair, err := ca.Issue(pki.AgentServerName, nil, []string{pki.AgentServerName}, nil, true)
	if err != nil {
		t.Fatal(err)
	}
	serving, err := tls.X509KeyPair(pair.CertPEM, pair.KeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	client, err := ca.Issue(pki.ServerClientCN, nil, nil, nil, false)
	if err != nil {
		t.Fatal(err)
	}
	clientCert, _ := tls.X509KeyPair(client.CertPEM, client.KeyPEM)

	var conns atomic.Int32
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if len(r.TLS.PeerCertificates) == 0 || r.TLS.PeerCertificates[0].Subject.CommonName != pki.ServerClientCN {
			http.Error(w, "who are you", http.StatusForbidden)
			return
		}
		_, _ = w.Write([]byte("serial log"))
	}))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{serving}, ClientAuth: tls.RequireAnyClientCert}
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the refused handshake below is expected
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.StartTLS()
	defer srv.Close()

	agents := newAgentTransports(clientCert)
	node := &kumo.Node{}
	node.Name = "n1"
	node.Status.AgentCertificate = string(ca.CertPEM)
	first, err := agents.forNode(node)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 10; i++ {
		rt, err := agents.forNode(node.DeepCopy())
		if err != nil {
			t.Fatal(err)
		}
		if rt != first {
			t.Fatal("a second transport for the same agent")
		}
		resp, err := (&http.Client{Transport: rt}).Get(srv.URL + "/v1/vms/ns/vm/console?showLog=true")
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("agent answered %s", resp.Status)
		}
	}
	if n := conns.Load(); n != 1 {
		t.Errorf("10 requests to one agent opened %d connections, want 1", n)
	}

	other, _ := pki.LoadOrCreateCA(t.TempDir())
	node.Status.AgentCertificate = string(other.CertPEM)
	rt, err := agents.forNode(node)
	if err != nil || rt == first {
		t.Fatalf("a new agent certificate must get a new transport: %v", err)
	}
	if _, err := (&http.Client{Transport: rt}).Get(srv.URL); err == nil {
		t.Error("an agent presenting a certificate other than the published one was trusted")
	}
	node.Status.AgentCertificate = "garbage"
	if _, err := agents.forNode(node); err == nil {
		t.Error("an unreadable agent certificate was accepted")
	}
}
