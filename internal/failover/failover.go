// Package failover lets a Kumo client (the node agent, the kumo CLI) talk to a control plane of
// several API servers: every request goes to the server currently in use, and when that server
// cannot be reached (connection refused, dial or TLS handshake timeout, a connection broken before
// the answer) the client moves on to the next one and stays there while it answers. HTTP answers,
// errors included, never move the client: a 500 or a 409 is the cluster's answer, not a dead server.
//
// It is a wrapper around the transport client-go builds from a rest.Config, so typed clients,
// informers and watches all fail over; an informer whose watch breaks because its server died
// lists or watches again from its resourceVersion through the next server, missing no event.
package failover

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"k8s.io/client-go/rest"
)

// Timeouts of the connections the failover transport makes. A dead server is found out by the
// dial timeout for new requests and by TCP keep-alive for open watches (a partitioned server never
// resets the connection): idle 5 s, then a probe every 2 s, 3 unanswered probes end it (~11 s).
const (
	DialTimeout       = 3 * time.Second
	KeepAliveIdle     = 5 * time.Second
	KeepAliveInterval = 2 * time.Second
	KeepAliveCount    = 3
	// unreachableLogEvery limits the "cannot reach any API server" log line.
	unreachableLogEvery = 10 * time.Second
)

// Servers is the list of API server URLs and the one in use. It is shared by every client made
// from the same configuration, so that once one request found a server dead, the others skip it.
type Servers struct {
	urls []*url.URL

	mu          sync.Mutex
	current     int
	lastLogged  time.Time
	unreachable bool
}

// NewServers parses the servers' URLs (https://host:port), in order of preference.
func NewServers(urls []string) (*Servers, error) {
	if len(urls) == 0 {
		return nil, errors.New("no API server URL given")
	}
	s := &Servers{}
	seen := map[string]bool{}
	for _, raw := range urls {
		raw = strings.TrimSpace(raw)
		u, err := url.Parse(raw)
		if err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") {
			return nil, fmt.Errorf("API server URL %q: want https://HOST:PORT", raw)
		}
		if u.Path != "" && u.Path != "/" {
			return nil, fmt.Errorf("API server URL %q: a path is not supported", raw)
		}
		if seen[u.Host] {
			continue
		}
		seen[u.Host] = true
		s.urls = append(s.urls, &url.URL{Scheme: u.Scheme, Host: u.Host})
	}
	return s, nil
}

// URLs returns the servers' URLs in order.
func (s *Servers) URLs() []string {
	out := make([]string, len(s.urls))
	for i, u := range s.urls {
		out[i] = u.String()
	}
	return out
}

// Current is the URL requests go to now.
func (s *Servers) Current() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.urls[s.current].String()
}

func (s *Servers) pick() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.current
}

// failed moves away from server i unless another request already did.
func (s *Servers) failed(i int, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.current != i {
		return
	}
	s.current = (i + 1) % len(s.urls)
	slog.Warn("API server unreachable, moving to the next one", "server", s.urls[i].String(), "next", s.urls[s.current].String(), "err", err)
}

// answered records that server i answered.
func (s *Servers) answered(i int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.unreachable {
		slog.Info("API server reachable again", "server", s.urls[i].String())
		s.unreachable = false
	}
}

func (s *Servers) noneAnswered(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.unreachable = true
	if time.Since(s.lastLogged) < unreachableLogEvery {
		return
	}
	s.lastLogged = time.Now()
	slog.Error("cannot reach any API server", "servers", strings.Join(s.urlsLocked(), ","), "err", err)
}

func (s *Servers) urlsLocked() []string {
	out := make([]string, len(s.urls))
	for i, u := range s.urls {
		out[i] = u.String()
	}
	return out
}

// Configure makes cfg fail over between servers: requests go to the current server whatever
// cfg.Host says (cfg.Host is set to the first server), connections have the timeouts above.
// Every client made from cfg (or a copy of it) shares servers.
func Configure(cfg *rest.Config, servers *Servers) {
	cfg.Host = servers.urls[0].String()
	dialer := &net.Dialer{
		Timeout: DialTimeout,
		KeepAliveConfig: net.KeepAliveConfig{
			Enable: true, Idle: KeepAliveIdle, Interval: KeepAliveInterval, Count: KeepAliveCount,
		},
	}
	if cfg.Dial == nil {
		cfg.Dial = dialer.DialContext
	}
	cfg.Wrap(func(rt http.RoundTripper) http.RoundTripper { return &Transport{Servers: servers, Next: rt} })
}

// Transport sends each request to the current server and moves on when it cannot be reached.
type Transport struct {
	Servers *Servers
	Next    http.RoundTripper
}

// RoundTrip implements http.RoundTripper.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	n := len(t.Servers.urls)
	var lastErr error
	for attempt := 0; attempt < n; attempt++ {
		i := t.Servers.pick()
		r, err := t.rewrite(req, i, attempt)
		if err != nil {
			return nil, err
		}
		resp, err := t.Next.RoundTrip(r)
		if err == nil {
			t.Servers.answered(i)
			return resp, nil
		}
		if req.Context().Err() != nil {
			// The caller gave up (a cancelled watch, its own deadline): not the server's fault.
			return nil, err
		}
		lastErr = fmt.Errorf("%s: %w", t.Servers.urls[i].Host, err)
		t.Servers.failed(i, err)
		if !Retriable(req.Method, err) {
			return nil, err
		}
	}
	t.Servers.noneAnswered(lastErr)
	return nil, fmt.Errorf("cannot reach any API server (%s): %w", strings.Join(t.Servers.URLs(), ", "), lastErr)
}

// rewrite points a copy of req at server i; a retried request gets a fresh body.
func (t *Transport) rewrite(req *http.Request, i, attempt int) (*http.Request, error) {
	r := req.Clone(req.Context())
	u := t.Servers.urls[i]
	r.URL.Scheme, r.URL.Host = u.Scheme, u.Host
	r.Host = ""
	if attempt > 0 && req.Body != nil && req.Body != http.NoBody {
		if req.GetBody == nil {
			return nil, fmt.Errorf("%s %s: the request body cannot be sent again to another server", req.Method, req.URL.Path)
		}
		body, err := req.GetBody()
		if err != nil {
			return nil, fmt.Errorf("%s %s: rewind the request body: %w", req.Method, req.URL.Path, err)
		}
		r.Body = body
	}
	return r, nil
}

// Retriable says whether a request that failed with err may go to another server: always when the
// request surely never reached the server (the connection could not be made), and for reads also
// when the connection broke later. A write whose connection broke after it was sent may have been
// applied: it is not repeated (the caller sees the error; the next request goes to another server).
func Retriable(method string, err error) bool {
	if NotSent(err) {
		return true
	}
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodOptions:
		return true
	}
	return false
}

// NotSent says whether err shows that the connection to the server was never established: the
// dial failed (refused, unreachable, timed out) or the TLS handshake did not complete.
func NotSent(err error) bool {
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		return true
	}
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) {
		return true
	}
	var verify *tls.CertificateVerificationError
	var header tls.RecordHeaderError
	if errors.As(err, &verify) || errors.As(err, &header) {
		return true
	}
	// net/http does not type its handshake timeout, nor alerts the server sent during the handshake.
	msg := err.Error()
	return strings.Contains(msg, "TLS handshake timeout") || strings.Contains(msg, "remote error: tls: ")
}
