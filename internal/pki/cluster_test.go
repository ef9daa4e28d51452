package pki

import (
	"crypto/x509"
	"net"
	"os"
	"path/filepath"
	"testing"

	certutil "k8s.io/client-go/util/cert"
)

func TestEtcdCertsFromSharedCA(t *testing.T) {
	dir := t.TempDir()
	ca, err := LoadOrCreateCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	ip := net.ParseIP("10.0.1.10")
	c, err := ca.EnsureEtcdCerts(dir, []net.IP{ip})
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(c.MemberCertFile)
	if err != nil {
		t.Fatal(err)
	}
	certs, _ := certutil.ParseCertsPEM(data)
	m := certs[0]
	if m.Subject.CommonName != EtcdCN || m.VerifyHostname("10.0.1.10") != nil || m.VerifyHostname("127.0.0.1") != nil {
		t.Fatalf("member certificate CN %q, IPs %v", m.Subject.CommonName, m.IPAddresses)
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)
	for _, usage := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
		if _, err := m.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{usage}}); err != nil {
			t.Fatalf("member certificate for usage %v: %v", usage, err)
		}
	}
	// Same address and CA: kept. Another CA (the pki was replaced by the shared one): remade.
	again, _ := ca.EnsureEtcdCerts(dir, []net.IP{ip})
	if d2, _ := os.ReadFile(again.MemberCertFile); string(d2) != string(data) {
		t.Fatal("a valid member certificate was remade")
	}
	other, err := LoadOrCreateCA(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := other.EnsureEtcdCerts(dir, []net.IP{ip}); err != nil {
		t.Fatal(err)
	}
	d3, _ := os.ReadFile(c.MemberCertFile)
	certs, _ = certutil.ParseCertsPEM(d3)
	if certs[0].CheckSignatureFrom(other.Cert) != nil {
		t.Fatal("the member certificate of the old CA was kept")
	}
}

func TestFingerprintDiffersWithAnySharedFile(t *testing.T) {
	dir := t.TempDir()
	for _, f := range SharedFiles {
		if err := os.WriteFile(filepath.Join(dir, f), []byte(f), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	a, err := Fingerprint(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "token.key"), []byte("another"), 0o600); err != nil {
		t.Fatal(err)
	}
	b, _ := Fingerprint(dir)
	if a == b {
		t.Fatal("another token key gives the same fingerprint")
	}
	os.Remove(filepath.Join(dir, "encryption.yaml"))
	if _, err := Fingerprint(dir); err == nil {
		t.Fatal("a missing shared file gives a fingerprint")
	}
	if m := MissingShared(dir); len(m) != 1 || m[0] != "encryption.yaml" {
		t.Fatalf("missing %v", m)
	}
}
