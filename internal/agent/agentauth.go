package agent

import (
	"crypto/x509"
	"net/http"
	"slices"

	"kumo.dev/kumo/internal/auth"
	"kumo.dev/kumo/internal/pki"
)

// Who may reach the agent's HTTPS endpoints. TLS has verified any client certificate against the
// cluster CA (for client authentication); the certificate's common name is the user and its
// organizations the groups, as the API server reads them.

// clientCert is the verified client certificate of the request, or nil.
func clientCert(r *http.Request) *x509.Certificate {
	if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 || len(r.TLS.VerifiedChains[0]) == 0 {
		return nil
	}
	return r.TLS.VerifiedChains[0][0]
}

func isAPIServer(c *x509.Certificate) bool { return c.Subject.CommonName == pki.ServerClientCN }

// mayReadMetrics: the API server, administrators and the metrics identity.
func mayReadMetrics(c *x509.Certificate) bool {
	return isAPIServer(c) || slices.ContainsFunc(c.Subject.Organization, func(g string) bool {
		return g == auth.GroupAdmins || g == auth.GroupSystemMasters || g == auth.GroupMetrics
	})
}

// guard answers 401 to a request without a verified client certificate and 403 to one whose
// certificate allow refuses.
func guard(allow func(*x509.Certificate) bool, what string, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c := clientCert(r)
		switch {
		case c == nil:
			http.Error(w, "a client certificate of the cluster CA is required", http.StatusUnauthorized)
		case !allow(c):
			http.Error(w, "user "+c.Subject.CommonName+" may not "+what, http.StatusForbidden)
		default:
			next.ServeHTTP(w, r)
		}
	})
}

// onlyAPIServer lets only the API server open console and VNC streams.
func onlyAPIServer(h http.HandlerFunc) http.Handler {
	return guard(isAPIServer, "open streams (only the API server may)", h)
}

// onlyMetricsReaders lets the API server, administrators and the metrics identity scrape.
func onlyMetricsReaders(h http.Handler) http.Handler {
	return guard(mayReadMetrics, "read metrics (administrators and "+auth.MetricsUser+" may)", h)
}
