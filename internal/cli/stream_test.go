package cli

import (
	"context"
	"encoding/pem"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/gorilla/websocket"
	"k8s.io/client-go/rest"
)

// wsServer accepts WebSockets on /ok (echoing one message) and refuses any other path with a
// Kubernetes Status; it records the headers of each handshake.
func wsServer(t *testing.T) (*httptest.Server, func() http.Header) {
	var mu sync.Mutex
	var last http.Header
	up := websocket.Upgrader{}
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		last = r.Header.Clone()
		mu.Unlock()
		if r.URL.Path != "/ok" {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusForbidden)
			_, _ = w.Write([]byte(`{"kind":"Status","apiVersion":"v1","status":"Failure","message":"vminstances \"x\" is forbidden: no","code":403}`))
			return
		}
		c, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer c.Close()
		if typ, msg, err := c.ReadMessage(); err == nil {
			_ = c.WriteMessage(typ, msg)
		}
	}))
	t.Cleanup(srv.Close)
	return srv, func() http.Header { mu.Lock(); defer mu.Unlock(); return last }
}

func tlsConfigFor(srv *httptest.Server) rest.TLSClientConfig {
	return rest.TLSClientConfig{CAData: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})}
}

// TestWebSocketUsesClientGoCredentials: the console's WebSocket carries what client-go's
// wrappers add to every request — a bearer token, impersonation, and what a transport wrapper
// such as an exec credential plugin adds.
func TestWebSocketUsesClientGoCredentials(t *testing.T) {
	srv, headers := wsServer(t)
	cfg := &rest.Config{Host: srv.URL, TLSClientConfig: tlsConfigFor(srv), BearerToken: "t0ken",
		Impersonate: rest.ImpersonationConfig{UserName: "bob", Groups: []string{"ops"}}, UserAgent: "kumo-test"}
	cfg.Wrap(func(rt http.RoundTripper) http.RoundTripper {
		return roundTripperFunc(func(r *http.Request) (*http.Response, error) {
			r = r.Clone(r.Context())
			r.Header.Set("X-Plugin", "wrapped")
			return rt.RoundTrip(r)
		})
	})
	ws, err := dialWebSocket(context.Background(), cfg, "/ok")
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	if err := ws.WriteMessage(websocket.BinaryMessage, []byte("ping")); err != nil {
		t.Fatal(err)
	}
	if _, msg, err := ws.ReadMessage(); err != nil || string(msg) != "ping" {
		t.Fatalf("echo: %q %v", msg, err)
	}
	h := headers()
	for k, want := range map[string]string{"Authorization": "Bearer t0ken", "Impersonate-User": "bob", "Impersonate-Group": "ops", "X-Plugin": "wrapped", "User-Agent": "kumo-test"} {
		if got := h.Get(k); got != want {
			t.Errorf("header %s = %q, want %q", k, got, want)
		}
	}
}

func TestWebSocketReadsTheTokenFile(t *testing.T) {
	srv, headers := wsServer(t)
	file := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(file, []byte("from-file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ws, err := dialWebSocket(context.Background(), &rest.Config{Host: srv.URL, TLSClientConfig: tlsConfigFor(srv), BearerTokenFile: file}, "/ok")
	if err != nil {
		t.Fatal(err)
	}
	ws.Close()
	if got := headers().Get("Authorization"); got != "Bearer from-file" {
		t.Errorf("Authorization = %q", got)
	}
}

func TestWebSocketRefusalCarriesTheServersMessage(t *testing.T) {
	srv, _ := wsServer(t)
	_, err := dialWebSocket(context.Background(), &rest.Config{Host: srv.URL, TLSClientConfig: tlsConfigFor(srv)}, "/nope")
	if err == nil || !strings.Contains(err.Error(), "403") || !strings.Contains(err.Error(), `is forbidden: no`) {
		t.Fatalf("want the 403 and its message, got %v", err)
	}
	// A server the configuration does not trust is refused.
	_, err = dialWebSocket(context.Background(), &rest.Config{Host: srv.URL}, "/ok")
	if err == nil {
		t.Fatal("connected to a server with an unknown certificate")
	}
}

// TestWebSocketGoesThroughTheConfiguredProxy: a kubeconfig's proxy-url (rest.Config.Proxy) is
// used for the console as for every other request.
func TestWebSocketGoesThroughTheConfiguredProxy(t *testing.T) {
	srv, _ := wsServer(t)
	var tunnels atomic.Int32
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodConnect {
			http.Error(w, "CONNECT only", http.StatusMethodNotAllowed)
			return
		}
		upstream, err := net.Dial("tcp", r.Host)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		tunnels.Add(1)
		w.WriteHeader(http.StatusOK)
		conn, buf, err := http.NewResponseController(w).Hijack()
		if err != nil {
			upstream.Close()
			return
		}
		go func() { _, _ = io.Copy(upstream, buf); upstream.Close() }()
		_, _ = io.Copy(conn, upstream)
		conn.Close()
	}))
	defer proxy.Close()
	proxyURL, _ := url.Parse(proxy.URL)
	cfg := &rest.Config{Host: srv.URL, TLSClientConfig: tlsConfigFor(srv), Proxy: http.ProxyURL(proxyURL)}
	ws, err := dialWebSocket(context.Background(), cfg, "/ok")
	if err != nil {
		t.Fatal(err)
	}
	ws.Close()
	if tunnels.Load() != 1 {
		t.Errorf("the WebSocket bypassed the configured proxy (%d tunnels)", tunnels.Load())
	}
}

type roundTripperFunc func(*http.Request) (*http.Response, error)

func (f roundTripperFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }
