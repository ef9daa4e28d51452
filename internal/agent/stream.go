package agent

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/gorilla/websocket"

	"kumo.dev/kumo/internal/pki"
	"kumo.dev/kumo/internal/wsstream"
)

const (
	// streamCertName is the name in every agent's serving certificate; the server checks it
	// against the certificate the node published.
	streamCertName = pki.AgentServerName
)

// upgrader accepts any origin: only the API server reaches the agent (mutual TLS), and it has
// authenticated and authorized the client already.
var upgrader = websocket.Upgrader{ReadBufferSize: wsstream.BufferSize, WriteBufferSize: wsstream.BufferSize,
	Subprotocols: []string{wsstream.Protocol}, CheckOrigin: func(*http.Request) bool { return true }}

// streamIdleTimeout closes a stream-server connection that carries no request.
const streamIdleTimeout = 2 * time.Minute

// startStreamServer serves console and VNC streams over HTTPS to the API server only, and the
// node's metrics to the API server, administrators and the metrics identity: each must present
// a client certificate of the cluster CA (see agentauth.go).
func (a *Agent) startStreamServer(ctx context.Context) (io.Closer, error) {
	cert, certPEM, err := a.servingCert()
	if err != nil {
		return nil, err
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(a.caPEM) {
		return nil, fmt.Errorf("cluster CA of the node credentials is unreadable")
	}
	listen := a.opts.ListenAddress
	if listen == "" {
		listen = "127.0.0.1:0"
	}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return nil, fmt.Errorf("stream server listen %s: %w", listen, err)
	}
	// A client certificate is verified against the cluster CA when one is given; who may do what
	// is decided per request (authorizeAgentRequest), so that a scrape without one gets a 401.
	tlsCfg := &tls.Config{
		Certificates: []tls.Certificate{cert}, ClientCAs: roots, ClientAuth: tls.VerifyClientCertIfGiven, MinVersion: tls.VersionTLS12,
	}
	mux := http.NewServeMux()
	mux.Handle("/v1/vms/{ns}/{name}/console", onlyAPIServer(a.serveConsole))
	mux.Handle("/v1/vms/{ns}/{name}/vnc", onlyAPIServer(a.serveVNC))
	mux.Handle("GET /metrics", onlyMetricsReaders(a.metricsHandler()))
	// An idle keep-alive connection (the server's pool keeps one per agent) is closed after
	// streamIdleTimeout; upgraded console/VNC streams end when either side closes.
	srv := &http.Server{Handler: mux, TLSConfig: tlsCfg, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: streamIdleTimeout}
	go func() {
		if err := srv.Serve(tls.NewListener(ln, tlsCfg)); err != nil && err != http.ErrServerClosed {
			slog.Error("stream server", "err", err)
		}
	}()
	port := ln.Addr().(*net.TCPAddr).Port
	a.endpoint = "https://" + net.JoinHostPort(a.advertiseHost(), strconv.Itoa(port))
	a.certPEM = string(certPEM)
	return srv, nil
}

func (a *Agent) advertiseHost() string {
	if a.opts.AdvertiseAddress != "" {
		return a.opts.AdvertiseAddress
	}
	host, _, err := net.SplitHostPort(a.opts.ListenAddress)
	if err != nil || host == "" || host == "0.0.0.0" || host == "::" {
		return "127.0.0.1"
	}
	return host
}

// servingCert loads or creates the agent's self-signed certificate (kept across restarts).
func (a *Agent) servingCert() (tls.Certificate, []byte, error) {
	certPath, keyPath := filepath.Join(a.opts.DataDir, "agent.crt"), filepath.Join(a.opts.DataDir, "agent.key")
	if certPEM, err := os.ReadFile(certPath); err == nil {
		if c, err := tls.LoadX509KeyPair(certPath, keyPath); err == nil {
			return c, certPEM, nil
		}
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: streamCertName + ":" + a.opts.Node},
		DNSNames: []string{streamCertName}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(10 * 365 * 24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})
	if err := os.WriteFile(keyPath, keyPEM, 0o600); err != nil {
		return tls.Certificate{}, nil, err
	}
	if err := os.WriteFile(certPath, certPEM, 0o644); err != nil {
		return tls.Certificate{}, nil, err
	}
	c, err := tls.X509KeyPair(certPEM, keyPEM)
	return c, certPEM, err
}

// lookupStream finds the running incarnation a stream asks for.
func (a *Agent) lookupStream(w http.ResponseWriter, r *http.Request) *runtimeVM {
	key := r.PathValue("ns") + "/" + r.PathValue("name")
	a.mu.Lock()
	rt := a.running[key]
	a.mu.Unlock()
	if rt == nil {
		http.Error(w, fmt.Sprintf("VM %s is not running on node %s", key, a.opts.Node), http.StatusNotFound)
		return nil
	}
	if inc := r.URL.Query().Get("incarnation"); inc != "" && inc != strconv.FormatInt(rt.incarnation, 10) {
		http.Error(w, fmt.Sprintf("VM %s runs incarnation %d here, not %s", key, rt.incarnation, inc), http.StatusConflict)
		return nil
	}
	return rt
}

func (a *Agent) serveConsole(w http.ResponseWriter, r *http.Request) {
	if r.URL.Query().Get("showLog") == "true" {
		a.serveSerialLog(w, r)
		return
	}
	rt := a.lookupStream(w, r)
	if rt == nil {
		return
	}
	con := rt.console()
	if con == nil {
		http.Error(w, "the serial console is not connected yet", http.StatusServiceUnavailable)
		return
	}
	ws, err := upgrader.Upgrade(w, r, nil)
	if err != nil {
		return
	}
	defer ws.Close()
	out, detach := con.attach()
	defer detach()
	go func() {
		for chunk := range out {
			if err := ws.WriteMessage(websocket.BinaryMessage, chunk); err != nil {
				return
			}
		}
		_ = ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, "console closed"), time.Now().Add(time.Second))
	}()
	for {
		_, msg, err := ws.ReadMessage()
		if err != nil {
			return
		}
		if _, err := con.Write(msg); err != nil {
			return
		}
	}
}

// serveSerialLog answers with the serial log of the incarnation asked for (query incarnation and
// uid, both optional): the running incarnation's, or the log kept after it ended.
func (a *Agent) serveSerialLog(w http.ResponseWriter, r *http.Request) {
	key := r.PathValue("ns") + "/" + r.PathValue("name")
	uid := r.URL.Query().Get("uid")
	var inc int64
	if s := r.URL.Query().Get("incarnation"); s != "" {
		var err error
		if inc, err = strconv.ParseInt(s, 10, 64); err != nil {
			http.Error(w, fmt.Sprintf("query incarnation %q: %v", s, err), http.StatusBadRequest)
			return
		}
	}
	a.mu.Lock()
	rt := a.running[key]
	a.mu.Unlock()
	var data []byte
	var err error = os.ErrNotExist
	asked := rt != nil && (inc == 0 || rt.incarnation == inc) && (uid == "" || rt.uid == uid)
	if asked {
		data, err = os.ReadFile(rt.serialLog())
	}
	if errors.Is(err, os.ErrNotExist) { // ended (perhaps just now): its log is kept
		if path, ok := a.keptSerialLog(key, uid, inc); ok {
			data, err = os.ReadFile(path)
		} else if asked {
			err = nil // running, nothing printed yet
		}
	}
	switch {
	case errors.Is(err, os.ErrNotExist):
		http.Error(w, fmt.Sprintf("node %s keeps no serial log of VM %s incarnation %d", a.opts.Node, key, inc), http.StatusNotFound)
		return
	case err != nil:
		http.Error(w, fmt.Sprintf("read the serial log of VM %s: %v", key, err), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	_, _ = w.Write(data)
}

func (a *Agent) serveVNC(w http.ResponseWriter, r *http.Request) {
	rt := a.lookupStream(w, r)
	if rt == nil {
		return
	}
	vnc, err := net.Dial("unix", rt.cfg.VNCSocket())
	if err != nil {
		http.Error(w, "VNC is not available: "+err.Error(), http.StatusServiceUnavailable)
		return
	}
	defer vnc.Close()
	ws, err := upgrader.Upgrade(w, r, nil)
	if err != nil {
		return
	}
	defer ws.Close()
	wsstream.Pipe(ws, vnc)
}
