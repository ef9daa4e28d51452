package failover

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// server is a test API server that counts the requests it answered.
type server struct {
	*httptest.Server
	hits atomic.Int32
}

func newServer(t *testing.T, status int) *server {
	s := &server{}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.hits.Add(1)
		body, _ := io.ReadAll(r.Body)
		w.WriteHeader(status)
		_, _ = w.Write(body)
	}))
	t.Cleanup(s.Close)
	return s
}

// deadURL is an address nothing listens on (connection refused).
func deadURL(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return "http://" + addr
}

func client(t *testing.T, urls ...string) (*http.Client, *Servers) {
	t.Helper()
	s, err := NewServers(urls)
	if err != nil {
		t.Fatal(err)
	}
	return &http.Client{Transport: &Transport{Servers: s, Next: &http.Transport{}}}, s
}

func TestRequestMovesToNextServerWhenConnectionRefused(t *testing.T) {
	live := newServer(t, http.StatusOK)
	dead := deadURL(t)
	c, s := client(t, dead, live.URL)
	resp, err := c.Get(dead + "/api")
	if err != nil {
		t.Fatalf("GET through a dead first server: %v", err)
	}
	resp.Body.Close()
	if live.hits.Load() != 1 {
		t.Fatalf("live server answered %d requests, want 1", live.hits.Load())
	}
	if s.Current() != live.URL {
		t.Fatalf("current server %s, want the live one %s", s.Current(), live.URL)
	}
}

func TestStaysOnLiveServer(t *testing.T) {
	a, b := newServer(t, http.StatusOK), newServer(t, http.StatusOK)
	dead := deadURL(t)
	c, _ := client(t, dead, a.URL, b.URL)
	for i := 0; i < 5; i++ {
		resp, err := c.Get(dead + "/api")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	if a.hits.Load() != 5 || b.hits.Load() != 0 {
		t.Fatalf("hits a=%d b=%d, want all 5 on the first live server", a.hits.Load(), b.hits.Load())
	}
}

func TestHTTPErrorsDoNotMoveOn(t *testing.T) {
	for _, status := range []int{http.StatusInternalServerError, http.StatusServiceUnavailable, http.StatusConflict, http.StatusForbidden} {
		failing, other := newServer(t, status), newServer(t, http.StatusOK)
		c, s := client(t, failing.URL, other.URL)
		resp, err := c.Get(failing.URL + "/api")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != status || other.hits.Load() != 0 || s.Current() != failing.URL {
			t.Fatalf("HTTP %d: got status %d, other server hits %d, current %s: an HTTP answer must not move the client", status, resp.StatusCode, other.hits.Load(), s.Current())
		}
	}
}

func TestWriteBodyIsSentAgainToNextServer(t *testing.T) {
	live := newServer(t, http.StatusCreated)
	dead := deadURL(t)
	c, _ := client(t, dead, live.URL)
	resp, err := c.Post(dead+"/apis/x", "application/json", strings.NewReader(`{"a":1}`))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if string(body) != `{"a":1}` {
		t.Fatalf("the live server got body %q, want the whole original body", body)
	}
}

func TestAllServersDownSaysSo(t *testing.T) {
	d1, d2 := deadURL(t), deadURL(t)
	c, _ := client(t, d1, d2)
	_, err := c.Get(d1 + "/api")
	if err == nil || !strings.Contains(err.Error(), "cannot reach any API server") || !strings.Contains(err.Error(), d2) {
		t.Fatalf("error %v: want it to say no server answered and list them", err)
	}
}

func TestCancelledRequestDoesNotMoveOn(t *testing.T) {
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-r.Context().Done()
	}))
	defer slow.Close()
	other := newServer(t, http.StatusOK)
	c, s := client(t, slow.URL, other.URL)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, slow.URL+"/api", nil)
	if _, err := c.Do(req); err == nil {
		t.Fatal("want the caller's deadline")
	}
	if other.hits.Load() != 0 || s.Current() != slow.URL {
		t.Fatalf("a request its caller gave up on moved the client (other hits %d, current %s)", other.hits.Load(), s.Current())
	}
}

func TestRetriable(t *testing.T) {
	dial := &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connect: connection refused")}
	reset := &net.OpError{Op: "read", Net: "tcp", Err: errors.New("connection reset by peer")}
	cases := []struct {
		method string
		err    error
		want   bool
	}{
		{http.MethodGet, dial, true},
		{http.MethodPost, dial, true},
		{http.MethodGet, reset, true},
		{http.MethodGet, io.ErrUnexpectedEOF, true},
		{http.MethodPost, reset, false},
		{http.MethodPut, io.ErrUnexpectedEOF, false},
		{http.MethodDelete, reset, false},
		{http.MethodPatch, errors.New("net/http: TLS handshake timeout"), true},
	}
	for _, c := range cases {
		if got := Retriable(c.method, c.err); got != c.want {
			t.Errorf("Retriable(%s, %v) = %v, want %v", c.method, c.err, got, c.want)
		}
	}
}

func TestKubeconfigKeepsServerListAndFirstServer(t *testing.T) {
	servers := []string{"https://10.0.0.1:6443", "https://10.0.0.2:6443", "https://10.0.0.3:6443"}
	cfg := clientcmdapi.NewConfig()
	cl := &clientcmdapi.Cluster{}
	if err := SetServers(cl, servers); err != nil {
		t.Fatal(err)
	}
	cfg.Clusters["kumo"] = cl
	cfg.AuthInfos["u"] = &clientcmdapi.AuthInfo{Token: "t"}
	cfg.Contexts["c"] = &clientcmdapi.Context{Cluster: "kumo", AuthInfo: "u"}
	cfg.CurrentContext = "c"
	data, err := clientcmd.Write(*cfg)
	if err != nil {
		t.Fatal(err)
	}
	loaded, err := clientcmd.Load(data)
	if err != nil {
		t.Fatal(err)
	}
	if loaded.Clusters["kumo"].Server != servers[0] {
		t.Fatalf("server: %q, want the first of the list for stock kubectl", loaded.Clusters["kumo"].Server)
	}
	// A second round trip (as the agent does when it writes a renewed token) keeps the list.
	data, err = clientcmd.Write(*loaded)
	if err != nil {
		t.Fatal(err)
	}
	got, err := KubeconfigServers(clientcmd.NewDefaultClientConfig(*mustLoad(t, data), nil))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(got, ",") != strings.Join(servers, ",") {
		t.Fatalf("servers %v, want %v", got, servers)
	}
}

func mustLoad(t *testing.T, data []byte) *clientcmdapi.Config {
	c, err := clientcmd.Load(data)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestNewServersRefusesBadURL(t *testing.T) {
	for _, u := range []string{"10.0.0.1:6443", "ftp://x", "https://x/path"} {
		if _, err := NewServers([]string{u}); err == nil {
			t.Errorf("NewServers(%q) accepted it", u)
		}
	}
}
