package pki

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"

	certutil "k8s.io/client-go/util/cert"
)

// The secrets every server of one cluster must share, as files of the pki directory: the cluster
// CA (it signs serving, client and etcd certificates), the token signing key (a token issued by
// one server works on all), and the encryption-at-rest configuration (a tenant key written by one
// server is readable by all). `kumod pki init` creates them once; the operator copies them into
// every server's DATA-DIR/pki before its first start.
var SharedFiles = []string{"ca.crt", "ca.key", "token.key", "encryption.yaml"}

// EtcdCN is the common name of every certificate an embedded etcd member accepts, for its peers
// and its clients (the API servers): the CA also signs the administrators' client certificates,
// which must not open etcd.
const EtcdCN = "kumo-etcd"

// LoadCA reads an existing CA from dir (no CA is created: a cluster member must use the shared one).
func LoadCA(dir string) (*CA, error) {
	certPath, keyPath := filepath.Join(dir, "ca.crt"), filepath.Join(dir, "ca.key")
	for _, p := range []string{certPath, keyPath} {
		if _, err := os.Stat(p); err != nil {
			return nil, fmt.Errorf("%s: %w (a server of a cluster uses the CA made by `kumod pki init`: copy its files into %s)", p, err, dir)
		}
	}
	return loadCA(certPath, keyPath)
}

// MissingShared lists the shared files absent from dir.
func MissingShared(dir string) []string {
	var missing []string
	for _, f := range SharedFiles {
		if _, err := os.Stat(filepath.Join(dir, f)); errors.Is(err, os.ErrNotExist) {
			missing = append(missing, f)
		}
	}
	return missing
}

// Fingerprint is a SHA-256 over the shared files of dir: two servers of the same cluster have
// the same one.
func Fingerprint(dir string) (string, error) {
	h := sha256.New()
	for _, f := range SharedFiles {
		data, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			return "", fmt.Errorf("fingerprint of the shared pki: %w", err)
		}
		fmt.Fprintf(h, "%s %d\n", f, len(data))
		h.Write(data)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// CAFingerprint is the SHA-256 of the CA certificate, as operators compare it.
func (ca *CA) CAFingerprint() string {
	sum := sha256.Sum256(ca.Cert.Raw)
	return hex.EncodeToString(sum[:])
}

// EtcdCerts are the files of an embedded etcd member: its certificate (serving and client
// authentication, for peers and clients alike) and the client certificate the API server uses.
type EtcdCerts struct {
	CAFile                        string
	MemberCertFile, MemberKeyFile string
	ClientCertFile, ClientKeyFile string
}

// EnsureEtcdCerts writes the member's and the API server's etcd certificates into dir, signed by
// ca, unless valid ones for the same addresses and CA are there already. The member certificate
// names ips, loopback and localhost.
func (ca *CA) EnsureEtcdCerts(dir string, ips []net.IP) (EtcdCerts, error) {
	c := EtcdCerts{
		CAFile:         filepath.Join(dir, "ca.crt"),
		MemberCertFile: filepath.Join(dir, "etcd-member.crt"), MemberKeyFile: filepath.Join(dir, "etcd-member.key"),
		ClientCertFile: filepath.Join(dir, "etcd-client.crt"), ClientKeyFile: filepath.Join(dir, "etcd-client.key"),
	}
	ips = append([]net.IP{net.ParseIP("127.0.0.1")}, ips...)
	dns := []string{"localhost"}
	if !ca.signed(c.MemberCertFile) || !covers(c.MemberCertFile, dns, ips) {
		p, err := ca.issue(EtcdCN, nil, dns, ips, x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth)
		if err != nil {
			return c, fmt.Errorf("etcd member certificate: %w", err)
		}
		if err := writePEMPair(c.MemberCertFile, c.MemberKeyFile, p); err != nil {
			return c, err
		}
	}
	if !ca.signed(c.ClientCertFile) {
		p, err := ca.issue(EtcdCN, nil, nil, nil, x509.ExtKeyUsageClientAuth)
		if err != nil {
			return c, fmt.Errorf("etcd client certificate: %w", err)
		}
		if err := writePEMPair(c.ClientCertFile, c.ClientKeyFile, p); err != nil {
			return c, err
		}
	}
	return c, nil
}

// signed says whether the certificate at path exists, is signed by ca and valid for 30 more days.
func (ca *CA) signed(path string) bool {
	data, err := os.ReadFile(path)
	if err != nil {
		return false
	}
	certs, err := certutil.ParseCertsPEM(data)
	if err != nil || time.Until(certs[0].NotAfter) < 30*24*time.Hour {
		return false
	}
	return certs[0].CheckSignatureFrom(ca.Cert) == nil
}

func writePEMPair(certPath, keyPath string, p *Pair) error {
	if err := os.WriteFile(keyPath, p.KeyPEM, 0o600); err != nil {
		return fmt.Errorf("write %s: %w", keyPath, err)
	}
	if err := os.WriteFile(certPath, p.CertPEM, 0o644); err != nil {
		return fmt.Errorf("write %s: %w", certPath, err)
	}
	return nil
}
