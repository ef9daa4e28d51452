package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"time"

	"k8s.io/client-go/util/keyutil"
)

// NewClientCSR makes a private key and a certificate signing request for it; the key never
// leaves the caller. The CSR's subject is informative only: SignClientCSR sets its own.
func NewClientCSR(cn string) (csrPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: cn}}, key)
	if err != nil {
		return nil, nil, fmt.Errorf("certificate request for %s: %w", cn, err)
	}
	if keyPEM, err = keyutil.MarshalPrivateKeyToPEM(key); err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}), keyPEM, nil
}

// SignClientCSR issues a client certificate for the public key of csrPEM (whose signature proves
// the requester holds the key), for user cn in groups, valid for validity. Whatever subject the
// request names is ignored.
func (ca *CA) SignClientCSR(csrPEM []byte, cn string, groups []string, validity time.Duration) ([]byte, error) {
	block, _ := pem.Decode(csrPEM)
	if block == nil || block.Type != "CERTIFICATE REQUEST" {
		return nil, errors.New("not a PEM certificate request")
	}
	csr, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("parse certificate request: %w", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("certificate request signature: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: cn, Organization: groups},
		NotBefore:    now.Add(-time.Minute),
		NotAfter:     now.Add(validity),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, csr.PublicKey, ca.Key)
	if err != nil {
		return nil, fmt.Errorf("sign certificate for %s: %w", cn, err)
	}
	return pemCert(der), nil
}

// ClientCertificateRequest is what a client sends to have a client certificate issued: its
// certificate request (PEM) and, optionally, how long the certificate should last.
type ClientCertificateRequest struct {
	CSR               string `json:"csr"`
	ExpirationSeconds int64  `json:"expirationSeconds,omitempty"`
}

// ClientCertificate is the issued certificate (PEM) and the cluster CA that signed it (PEM).
type ClientCertificate struct {
	Certificate string    `json:"certificate"`
	CA          string    `json:"ca"`
	User        string    `json:"user"`
	Groups      []string  `json:"groups"`
	NotAfter    time.Time `json:"notAfter"`
}
