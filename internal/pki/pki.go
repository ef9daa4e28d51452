// Package pki creates the cluster's certificate authority on first start and the certificates
// signed by it: the API server's serving certificate and client certificates (the admin's).
// Files live under one directory, keys mode 0600.
package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"

	certutil "k8s.io/client-go/util/cert"
	"k8s.io/client-go/util/keyutil"
)

const (
	caValidity   = 10 * 365 * 24 * time.Hour
	certValidity = 2 * 365 * 24 * time.Hour
)

// CA is the cluster's certificate authority.
type CA struct {
	Cert    *x509.Certificate
	Key     crypto.Signer
	CertPEM []byte
}

// LoadOrCreateCA reads dir/ca.crt and dir/ca.key, creating them on first use.
func LoadOrCreateCA(dir string) (*CA, error) {
	certPath, keyPath := filepath.Join(dir, "ca.crt"), filepath.Join(dir, "ca.key")
	if _, err := os.Stat(certPath); err == nil {
		return loadCA(certPath, keyPath)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "kumo-ca"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(caValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("create CA certificate: %w", err)
	}
	if err := writePair(certPath, keyPath, der, key); err != nil {
		return nil, err
	}
	return loadCA(certPath, keyPath)
}

func loadCA(certPath, keyPath string) (*CA, error) {
	certPEM, err := os.ReadFile(certPath)
	if err != nil {
		return nil, err
	}
	certs, err := certutil.ParseCertsPEM(certPEM)
	if err != nil {
		return nil, fmt.Errorf("parse %s: %w", certPath, err)
	}
	keyAny, err := keyutil.PrivateKeyFromFile(keyPath)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", keyPath, err)
	}
	key, ok := keyAny.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("%s holds no signing key", keyPath)
	}
	return &CA{Cert: certs[0], Key: key, CertPEM: certPEM}, nil
}

// Pair is a certificate and its key, PEM-encoded.
type Pair struct{ CertPEM, KeyPEM []byte }

// Issue signs a new certificate. Server certificates get the given DNS names and IPs; client
// certificates carry the user as CN and groups as O, which the API server reads.
func (ca *CA) Issue(cn string, groups []string, dnsNames []string, ips []net.IP, server bool) (*Pair, error) {
	usage := x509.ExtKeyUsageClientAuth
	if server {
		usage = x509.ExtKeyUsageServerAuth
	}
	return ca.issue(cn, groups, dnsNames, ips, usage)
}

func (ca *CA) issue(cn string, groups []string, dnsNames []string, ips []net.IP, usages ...x509.ExtKeyUsage) (*Pair, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: cn, Organization: groups},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(certValidity),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:  usages,
		DNSNames:     dnsNames,
		IPAddresses:  ips,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, key.Public(), ca.Key)
	if err != nil {
		return nil, fmt.Errorf("sign certificate for %s: %w", cn, err)
	}
	keyPEM, err := keyutil.MarshalPrivateKeyToPEM(key)
	if err != nil {
		return nil, err
	}
	return &Pair{CertPEM: pemCert(der), KeyPEM: keyPEM}, nil
}

// EnsureServerCert writes dir/server.crt and dir/server.key unless a valid pair for the same
// names already exists, and returns their paths.
func (ca *CA) EnsureServerCert(dir string, dnsNames []string, ips []net.IP) (certPath, keyPath string, err error) {
	certPath, keyPath = filepath.Join(dir, "server.crt"), filepath.Join(dir, "server.key")
	if covers(certPath, dnsNames, ips) && ca.signed(certPath) {
		return certPath, keyPath, nil
	}
	p, err := ca.Issue("kumo-apiserver", nil, dnsNames, ips, true)
	if err != nil {
		return "", "", err
	}
	if err := os.WriteFile(keyPath, p.KeyPEM, 0o600); err != nil {
		return "", "", err
	}
	return certPath, keyPath, os.WriteFile(certPath, p.CertPEM, 0o644)
}

// covers says whether the certificate at path is still valid for all the names.
func covers(path string, dnsNames []string, ips []net.IP) bool {
	data, err := os.ReadFile(path)
	if err != nil {
		return false
	}
	certs, err := certutil.ParseCertsPEM(data)
	if err != nil || time.Until(certs[0].NotAfter) < 30*24*time.Hour {
		return false
	}
	for _, n := range dnsNames {
		if certs[0].VerifyHostname(n) != nil {
			return false
		}
	}
	for _, ip := range ips {
		if certs[0].VerifyHostname(ip.String()) != nil {
			return false
		}
	}
	return true
}

func writePair(certPath, keyPath string, der []byte, key crypto.Signer) error {
	keyPEM, err := keyutil.MarshalPrivateKeyToPEM(key)
	if err != nil {
		return err
	}
	if err := os.WriteFile(keyPath, keyPEM, 0o600); err != nil {
		return err
	}
	return os.WriteFile(certPath, pemCert(der), 0o644)
}

func pemCert(der []byte) []byte {
	out, err := certutil.EncodeCertificates(&x509.Certificate{Raw: der})
	if err != nil {
		panic(errors.New("encode certificate: " + err.Error()))
	}
	return out
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		panic(err)
	}
	return n
}
