package pki

import (
	"crypto/x509"
	"encoding/pem"
	"testing"
	"time"
)

func TestSignClientCSRIssuesTheServersIdentityNotTheRequested(t *testing.T) {
	ca, err := LoadOrCreateCA(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	csrPEM, _, err := NewClientCSR("kumo-admin") // asks for more than it gets
	if err != nil {
		t.Fatal(err)
	}
	certPEM, err := ca.SignClientCSR(csrPEM, "kumo:metrics", []string{"kumo:metrics"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(certPEM)
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if cert.Subject.CommonName != "kumo:metrics" || len(cert.Subject.Organization) != 1 || cert.Subject.Organization[0] != "kumo:metrics" {
		t.Errorf("subject %v, want CN and O kumo:metrics", cert.Subject)
	}
	if left := time.Until(cert.NotAfter); left > time.Hour || left < 58*time.Minute {
		t.Errorf("certificate lasts %s more, want about an hour", left)
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)
	if _, err := cert.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("not a client certificate of the CA: %v", err)
	}
	if _, err := cert.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err == nil {
		t.Error("the metrics certificate can serve TLS")
	}

	// A request whose signature does not match its key, or no request at all, is refused.
	block, _ = pem.Decode(csrPEM)
	block.Bytes[len(block.Bytes)-3] ^= 0xff
	for name, bad := range map[string][]byte{"tampered": pem.EncodeToMemory(block), "not PEM": []byte("csr"), "a certificate": certPEM} {
		if _, err := ca.SignClientCSR(bad, "kumo:metrics", nil, time.Hour); err == nil {
			t.Errorf("%s request was signed", name)
		}
	}
}
