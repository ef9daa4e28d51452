package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"kumo.dev/kumo/internal/pki"
	kumo "kumo.dev/kumo/pkg/apis/kumo/v1alpha1"
)

// scrapeResult is one scrape: its status and, for a 200, the parsed families.
type scrapeResult struct {
	status   int
	body     string
	families map[string]*dto.MetricFamily
}

// scrape GETs url over TLS trusting roots (server name serverName when set) with the client
// certificate cert (none when nil) or the bearer token.
func scrape(t *testing.T, url string, roots *x509.CertPool, serverName string, cert *tls.Certificate, token string) scrapeResult {
	t.Helper()
	cfg := &tls.Config{RootCAs: roots, ServerName: serverName, MinVersion: tls.VersionTLS12}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	hc := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{TLSClientConfig: cfg}}
	defer hc.CloseIdleConnections()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatalf("scrape %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("scrape %s: %v", url, err)
	}
	r := scrapeResult{status: resp.StatusCode, body: string(b)}
	if resp.StatusCode == http.StatusOK {
		p := expfmt.NewTextParser(model.UTF8Validation)
		if r.families, err = p.TextToMetricFamilies(strings.NewReader(r.body)); err != nil {
			t.Fatalf("scrape %s: parse: %v", url, err)
		}
	}
	return r
}

// value is the value of the series of family name whose labels include want; ok false when there
// is no such series.
func (s scrapeResult) value(name string, want map[string]string) (float64, bool) {
	f := s.families[name]
	if f == nil {
		return 0, false
	}
next:
	for _, m := range f.GetMetric() {
		have := map[string]string{}
		for _, l := range m.GetLabel() {
			have[l.GetName()] = l.GetValue()
		}
		for k, v := range want {
			if have[k] != v {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.GetCounter().GetValue(), true
		case m.Gauge != nil:
			return m.GetGauge().GetValue(), true
		case m.Histogram != nil:
			return float64(m.GetHistogram().GetSampleCount()), true
		}
	}
	return 0, false
}

func (s scrapeResult) must(t *testing.T, name string, want map[string]string) float64 {
	t.Helper()
	v, ok := s.value(name, want)
	if !ok {
		t.Fatalf("no series %s%v in the scrape", name, want)
	}
	return v
}

func loadPair(t *testing.T, dir string) tls.Certificate {
	t.Helper()
	c, err := tls.LoadX509KeyPair(filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key"))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestAgentMetricsShowAVMsCPUAndDiskWritesToTheMetricsIdentityOnly(t *testing.T) {
	c := startAllInOne(t)
	tenant := "metered"
	kc := c.NewTenant(t, tenant)
	cl := c.Client(t, kc)
	ns := kumo.TenantNamespace(tenant)
	if r := Run(kc, twoDiskVM("vmm", []string{"boot", "data"}, map[string]string{"boot": "1Gi", "data": "64Mi"}), bins.kumo, "apply", "-f", "-"); r.Err != nil {
		t.Fatal(r)
	}
	waitVM(t, cl, ns, "vmm", "Running", bootTimeout, running)
	eventually(t, bootTimeout, "the guest's marker", func() bool {
		return strings.Contains(c.MustKumo(t, kc, "console", "vmm", "--show-log"), "KUMO-GUEST-READY")
	})

	// The metrics identity: a kubeconfig and the files Prometheus reads.
	dir := t.TempDir()
	metricsKC := filepath.Join(dir, "metrics.kubeconfig")
	c.MustKumo(t, c.AdminKubeconfig(), "metrics", "kubeconfig", "-o", metricsKC, "--cert-dir", dir)
	metricsCert := loadPair(t, dir)
	if st, err := os.Stat(filepath.Join(dir, "tls.key")); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("tls.key: %v, %v; want mode 0600", st.Mode(), err)
	}
	// Only administrators issue them.
	if r := c.Kumo(kc, "metrics", "kubeconfig"); r.Err == nil || !strings.Contains(r.Stderr, "403") || !strings.Contains(r.Stderr, "forbidden") {
		t.Errorf("a tenant issued itself a metrics certificate: %s", r)
	}
	if r := c.Kumo(metricsKC, "metrics", "kubeconfig"); r.Err == nil {
		t.Errorf("the metrics identity issued itself a certificate: %s", r)
	}

	// The agent's endpoint and certificate, as the node published them.
	node := &kumo.Node{}
	if err := c.Admin(t).Kumo.Get().Resource("nodes").Name("aio").Do(context.Background()).Into(node); err != nil {
		t.Fatal(err)
	}
	agentRoots := x509.NewCertPool()
	if !agentRoots.AppendCertsFromPEM([]byte(node.Status.AgentCertificate)) {
		t.Fatalf("node aio publishes no agent certificate")
	}
	agentURL := node.Status.AgentEndpoint + "/metrics"
	vm := map[string]string{"namespace": ns, "name": "vmm", "node": "aio"}
	with := func(extra ...string) map[string]string {
		m := map[string]string{}
		for k, v := range vm {
			m[k] = v
		}
		for i := 0; i+1 < len(extra); i += 2 {
			m[extra[i]] = extra[i+1]
		}
		return m
	}
	data := with("drive", "vmm-data")

	s1 := scrape(t, agentURL, agentRoots, pki.AgentServerName, &metricsCert, "")
	if s1.status != http.StatusOK {
		t.Fatalf("metrics identity scraping the agent: %d %s", s1.status, s1.body)
	}
	if up := s1.must(t, "kumo_vmi_stats_up", vm); up != 1 {
		t.Fatalf("kumo_vmi_stats_up = %v", up)
	}
	if v := s1.must(t, "kubevirt_vmi_info", with("phase", "Running", "instance_type", "s1.small", "preference", "debian")); v != 1 {
		t.Errorf("kubevirt_vmi_info = %v", v)
	}
	if mem := s1.must(t, "kubevirt_vmi_memory_domain_bytes", vm); mem <= 0 {
		t.Errorf("kubevirt_vmi_memory_domain_bytes = %v", mem)
	}
	if rss := s1.must(t, "kubevirt_vmi_memory_resident_bytes", vm); rss <= 0 {
		t.Errorf("kubevirt_vmi_memory_resident_bytes = %v", rss)
	}
	if boot := s1.must(t, "kubevirt_vmi_storage_read_traffic_bytes_total", with("drive", "vmm-boot")); boot <= 0 {
		t.Errorf("the boot disk was read %v bytes", boot)
	}
	vcpu1 := s1.must(t, "kubevirt_vmi_vcpu_seconds_total", with("id", "0", "state", "running"))
	written1 := s1.must(t, "kubevirt_vmi_storage_write_traffic_bytes_total", data)
	writes1 := s1.must(t, "kubevirt_vmi_storage_iops_write_total", data)

	// The guest writes 2 MiB to its data disk, synchronously.
	if r := consoleRun(kc, "vmm", "dd if=/dev/urandom of=/dev/vdb bs=64k count=32 conv=fsync 2>/dev/null"); r.Err != nil {
		t.Fatalf("dd in the guest: %s", r)
	}
	s2 := scrape(t, agentURL, agentRoots, pki.AgentServerName, &metricsCert, "")
	if s2.status != http.StatusOK {
		t.Fatalf("second scrape: %d %s", s2.status, s2.body)
	}
	vcpu2 := s2.must(t, "kubevirt_vmi_vcpu_seconds_total", with("id", "0", "state", "running"))
	written2 := s2.must(t, "kubevirt_vmi_storage_write_traffic_bytes_total", data)
	writes2 := s2.must(t, "kubevirt_vmi_storage_iops_write_total", data)
	t.Logf("vCPU 0: %.2f s → %.2f s; data disk written %.0f → %.0f bytes in %.0f → %.0f writes", vcpu1, vcpu2, written1, written2, writes1, writes2)
	if vcpu2 <= vcpu1 {
		t.Errorf("vCPU seconds did not grow between scrapes: %v → %v", vcpu1, vcpu2)
	}
	if written2-written1 < 2<<20 || writes2 <= writes1 {
		t.Errorf("after the guest wrote 2 MiB: %v → %v bytes, %v → %v writes", written1, written2, writes1, writes2)
	}

	// Refused: no certificate (401), a tenant's token (401: the agent takes certificates only),
	// while an administrator's certificate is taken.
	if r := scrape(t, agentURL, agentRoots, pki.AgentServerName, nil, ""); r.status != http.StatusUnauthorized {
		t.Errorf("unauthenticated scrape of the agent: %d %s", r.status, r.body)
	}
	tenantCfg, err := c.restConfig(kc)
	if err != nil {
		t.Fatal(err)
	}
	if r := scrape(t, agentURL, agentRoots, pki.AgentServerName, nil, tenantCfg.BearerToken); r.status != http.StatusUnauthorized || tenantCfg.BearerToken == "" {
		t.Errorf("tenant's scrape of the agent: %d %s", r.status, r.body)
	}
	adminCfg, err := c.restConfig(c.AdminKubeconfig())
	if err != nil {
		t.Fatal(err)
	}
	adminCert, err := tls.X509KeyPair(adminCfg.CertData, adminCfg.KeyData)
	if err != nil {
		t.Fatal(err)
	}
	if r := scrape(t, agentURL, agentRoots, pki.AgentServerName, &adminCert, ""); r.status != http.StatusOK {
		t.Errorf("administrator's scrape of the agent: %d %s", r.status, r.body)
	}

	// The server's /metrics: the library's request latency, the scheduler's histograms, the
	// time from create to Running, the node's resources — to the metrics identity only.
	serverRoots := x509.NewCertPool()
	serverRoots.AppendCertsFromPEM(adminCfg.CAData)
	serverURL := c.URL() + "/metrics"
	sm := scrape(t, serverURL, serverRoots, "", &metricsCert, "")
	if sm.status != http.StatusOK {
		t.Fatalf("metrics identity scraping the server: %d %s", sm.status, sm.body)
	}
	// kumo apply is a server-side apply: verb APPLY.
	if n := sm.must(t, "apiserver_request_duration_seconds", map[string]string{"verb": "APPLY", "resource": "vminstances"}); n < 1 {
		t.Errorf("apiserver_request_duration_seconds counts %v applies of VMs", n)
	}
	if n := sm.must(t, "kumo_scheduler_scheduling_attempt_duration_seconds", map[string]string{"result": "bound"}); n < 1 {
		t.Errorf("scheduling attempts that bound: %v", n)
	}
	if n := sm.must(t, "kumo_scheduler_pending_duration_seconds", nil); n < 1 {
		t.Errorf("pending durations observed: %v", n)
	}
	if n := sm.must(t, "kubevirt_vmi_phase_transition_time_from_creation_seconds", map[string]string{"phase": "Running"}); n < 1 {
		t.Errorf("create → Running observed %v times", n)
	}
	if v := sm.must(t, "kumo_node_bound_cpus", map[string]string{"node": "aio", "datacenter": "dc1"}); v != 1 {
		t.Errorf("kumo_node_bound_cpus{node=aio} = %v, want 1 (one s1.small)", v)
	}
	if v := sm.must(t, "kumo_node_allocatable_cpus", map[string]string{"node": "aio"}); v < 1 {
		t.Errorf("kumo_node_allocatable_cpus{node=aio} = %v", v)
	}
	if v := sm.must(t, "kubevirt_vmi_phase_count", map[string]string{"node": "aio", "phase": "Running"}); v != 1 {
		t.Errorf("kubevirt_vmi_phase_count{aio,Running} = %v", v)
	}
	sm.must(t, "kumo_failover_detection_seconds", nil) // named now, observed once failover lands
	if r := scrape(t, serverURL, serverRoots, "", nil, ""); r.status != http.StatusUnauthorized {
		t.Errorf("unauthenticated scrape of the server: %d", r.status)
	}
	if r := scrape(t, serverURL, serverRoots, "", nil, tenantCfg.BearerToken); r.status != http.StatusForbidden {
		t.Errorf("tenant's scrape of the server: %d", r.status)
	}
	// The metrics identity reads nothing else.
	if r := c.Kumo(metricsKC, "get", "vminstances", "-A"); r.Err == nil || !strings.Contains(r.Stderr, "forbidden") {
		t.Errorf("the metrics identity listed VMs: %s", r)
	}
}
