package apiserver

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"

	"kumo.dev/kumo/internal/pki"
	kumo "kumo.dev/kumo/pkg/apis/kumo/v1alpha1"
)

// Timeouts of the connections the server opens to agents for console, VNC and serial logs.
const (
	agentDialTimeout      = 10 * time.Second
	agentHandshakeTimeout = 10 * time.Second
	// agentIdleTimeout closes a pooled connection nobody used for this long.
	agentIdleTimeout = 90 * time.Second
)

// agentTransports keeps one HTTP transport per node for the streams the server proxies to its
// agent: requests reuse its pooled connections instead of each leaving one behind, and idle ones
// close. A node that publishes a new agent certificate gets a new transport (the old one's idle
// connections are closed).
type agentTransports struct {
	clientCert tls.Certificate

	mu     sync.Mutex
	byNode map[string]*agentTransport
}

type agentTransport struct {
	certPEM string
	rt      *http.Transport
}

func newAgentTransports(clientCert tls.Certificate) *agentTransports {
	return &agentTransports{clientCert: clientCert, byNode: map[string]*agentTransport{}}
}

// forNode returns the transport to node's agent, trusting only the certificate the node published.
func (a *agentTransports) forNode(node *kumo.Node) (*http.Transport, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	cur := a.byNode[node.Name]
	if cur != nil && cur.certPEM == node.Status.AgentCertificate {
		return cur.rt, nil
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM([]byte(node.Status.AgentCertificate)) {
		return nil, fmt.Errorf("node %s publishes an unreadable agent certificate", node.Name)
	}
	dialer := &net.Dialer{Timeout: agentDialTimeout, KeepAlive: 30 * time.Second}
	rt := &http.Transport{
		TLSClientConfig: &tls.Config{
			Certificates: []tls.Certificate{a.clientCert},
			RootCAs:      roots,
			ServerName:   pki.AgentServerName,
			MinVersion:   tls.VersionTLS12,
		},
		DialContext:         dialer.DialContext,
		TLSHandshakeTimeout: agentHandshakeTimeout,
		IdleConnTimeout:     agentIdleTimeout,
		MaxIdleConnsPerHost: 4,
	}
	if cur != nil {
		cur.rt.CloseIdleConnections()
	}
	a.byNode[node.Name] = &agentTransport{certPEM: node.Status.AgentCertificate, rt: rt}
	return rt, nil
}
