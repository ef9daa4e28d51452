package apiserver

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"time"

	genericrequest "k8s.io/apiserver/pkg/endpoints/request"

	"kumo.dev/kumo/internal/auth"
	"kumo.dev/kumo/internal/pki"
)

// The metrics identity's certificates. k8s.io/apiserver serves /metrics itself (its request
// latency histograms and every metric registered in component-base's legacy registry, the
// controllers' included); the policy lets administrators and the metrics identity read it.
const (
	// DefaultMetricsCertificateLifetime is how long a metrics certificate lasts unless asked.
	DefaultMetricsCertificateLifetime = 365 * 24 * time.Hour
	minMetricsCertificateLifetime     = 10 * time.Minute
	maxMetricsCertificateLifetime     = 2 * 365 * 24 * time.Hour
	// maxCertificateRequestBytes bounds the body of a certificate request.
	maxCertificateRequestBytes = 64 << 10
)

// installMetricsCertificates serves POST auth.MetricsCertificatePath: an administrator sends a
// certificate request and gets a client certificate of the cluster CA for the metrics identity,
// which reads the servers' and the agents' /metrics and nothing else.
func (s *Server) installMetricsCertificates() {
	s.generic.Handler.NonGoRestfulMux.HandleFunc(auth.MetricsCertificatePath, func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			http.Error(w, "POST a certificate request", http.StatusMethodNotAllowed)
			return
		}
		var req pki.ClientCertificateRequest
		dec := json.NewDecoder(io.LimitReader(r.Body, maxCertificateRequestBytes))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&req); err != nil {
			http.Error(w, fmt.Sprintf("decode the certificate request: %v", err), http.StatusBadRequest)
			return
		}
		lifetime := DefaultMetricsCertificateLifetime
		if req.ExpirationSeconds != 0 {
			lifetime = time.Duration(req.ExpirationSeconds) * time.Second
		}
		if lifetime < minMetricsCertificateLifetime || lifetime > maxMetricsCertificateLifetime {
			http.Error(w, fmt.Sprintf("expirationSeconds: %d is outside [%d, %d]", req.ExpirationSeconds,
				int64(minMetricsCertificateLifetime.Seconds()), int64(maxMetricsCertificateLifetime.Seconds())), http.StatusUnprocessableEntity)
			return
		}
		groups := []string{auth.GroupMetrics}
		certPEM, err := s.CA.SignClientCSR([]byte(req.CSR), auth.MetricsUser, groups, lifetime)
		if err != nil {
			http.Error(w, "csr: "+err.Error(), http.StatusUnprocessableEntity)
			return
		}
		who := "unknown"
		if u, ok := genericrequest.UserFrom(r.Context()); ok {
			who = u.GetName()
		}
		notAfter := time.Now().Add(lifetime).UTC().Truncate(time.Second)
		slog.Info("issued a metrics certificate", "by", who, "user", auth.MetricsUser, "notAfter", notAfter)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusCreated)
		_ = json.NewEncoder(w).Encode(pki.ClientCertificate{Certificate: string(certPEM), CA: string(s.CA.CertPEM),
			User: auth.MetricsUser, Groups: groups, NotAfter: notAfter})
	})
}
