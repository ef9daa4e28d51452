package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"k8s.io/client-go/rest"
	cmdutil "k8s.io/kubectl/pkg/cmd/util"

	"kumo.dev/kumo/internal/auth"
	"kumo.dev/kumo/internal/pki"
)

func newMetricsCmd(f cmdutil.Factory, streams genericiooptions.IOStreams) *cobra.Command {
	cmd := &cobra.Command{Use: "metrics", Short: "Credentials for Prometheus"}
	var output, certDir string
	var expiration time.Duration
	kc := &cobra.Command{
		Use:   "kubeconfig",
		Short: "Issue credentials of the metrics identity: a kubeconfig, and with --cert-dir the files Prometheus reads",
		Long: "Issue a client certificate of the cluster CA for the metrics identity (user " + auth.MetricsUser + ", group " + auth.GroupMetrics + "), " +
			"which may read /metrics of the API servers and of every agent and nothing else. Only administrators may issue one.\n\n" +
			"The private key is made here and never sent. The kubeconfig goes to stdout or -o FILE (mode 0600); --cert-dir DIR also " +
			"writes DIR/ca.crt (the cluster CA), DIR/tls.crt and DIR/tls.key for a Prometheus scrape configuration (see examples/prometheus.yml). " +
			"The certificate cannot be revoked before it expires (--expiration, 10m to 2 years).",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := f.ToRESTConfig()
			if err != nil {
				return err
			}
			csrPEM, keyPEM, err := pki.NewClientCSR(auth.MetricsUser)
			if err != nil {
				return err
			}
			body, err := json.Marshal(pki.ClientCertificateRequest{CSR: string(csrPEM), ExpirationSeconds: int64(expiration.Seconds())})
			if err != nil {
				return err
			}
			got, err := requestMetricsCertificate(cmd.Context(), cfg, body)
			if err != nil {
				return fmt.Errorf("issue a metrics certificate: %w", err)
			}
			if certDir != "" {
				if err := os.MkdirAll(certDir, 0o700); err != nil {
					return err
				}
				for name, data := range map[string]string{"ca.crt": got.CA, "tls.crt": got.Certificate, "tls.key": string(keyPEM)} {
					if err := os.WriteFile(filepath.Join(certDir, name), []byte(data), 0o600); err != nil {
						return fmt.Errorf("write %s: %w", name, err)
					}
				}
			}
			data, err := pki.Kubeconfig("kumo", cfg.Host, []byte(got.CA), auth.MetricsUser,
				pki.Credentials{ClientCertPEM: []byte(got.Certificate), ClientKeyPEM: keyPEM}, "")
			if err != nil {
				return err
			}
			fmt.Fprintf(streams.ErrOut, "metrics certificate for %s valid until %s\n", got.User, got.NotAfter.Format(time.RFC3339))
			if output == "" {
				_, err = streams.Out.Write(data)
				return err
			}
			return os.WriteFile(output, data, 0o600)
		},
	}
	kc.Flags().StringVarP(&output, "output-file", "o", "", "write the kubeconfig to this file (mode 0600)")
	kc.Flags().StringVar(&certDir, "cert-dir", "", "also write ca.crt, tls.crt and tls.key to this directory (for Prometheus)")
	kc.Flags().DurationVar(&expiration, "expiration", 365*24*time.Hour, "how long the certificate lasts")
	cmd.AddCommand(kc)
	return cmd
}

// requestMetricsCertificate POSTs the certificate request with the kubeconfig's credentials and
// decodes the answer; an error answer is reported with its status and the server's message.
func requestMetricsCertificate(ctx context.Context, cfg *rest.Config, body []byte) (*pki.ClientCertificate, error) {
	hc, err := rest.HTTPClientFor(cfg)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimSuffix(cfg.Host, "/")+auth.MetricsCertificatePath, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, fmt.Errorf("read the answer: %w", err)
	}
	if resp.StatusCode != http.StatusCreated {
		msg := strings.TrimSpace(string(raw))
		var st metav1.Status
		if json.Unmarshal(raw, &st) == nil && st.Message != "" {
			msg = st.Message
		}
		return nil, fmt.Errorf("HTTP %d: %s", resp.StatusCode, msg)
	}
	var got pki.ClientCertificate
	if err := json.Unmarshal(raw, &got); err != nil {
		return nil, fmt.Errorf("decode the answer: %w", err)
	}
	return &got, nil
}
