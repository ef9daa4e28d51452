package agent

import (
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"

	"kumo.dev/kumo/internal/auth"
	"kumo.dev/kumo/internal/hypervisor/qemu"
	"kumo.dev/kumo/internal/pki"
)

func requestWithCert(cn string, groups ...string) *http.Request {
	r := httptest.NewRequest(http.MethodGet, "/metrics", nil)
	if cn != "" {
		c := &x509.Certificate{Subject: pkix.Name{CommonName: cn, Organization: groups}}
		r.TLS = &tls.ConnectionState{VerifiedChains: [][]*x509.Certificate{{c}}}
	} else {
		r.TLS = &tls.ConnectionState{}
	}
	return r
}

func TestAgentEndpointsAdmitOnlyTheirReaders(t *testing.T) {
	ok := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) })
	metrics, streams := onlyMetricsReaders(ok), onlyAPIServer(ok)
	cases := []struct {
		name            string
		r               *http.Request
		metrics, stream int
	}{
		{"no client certificate", requestWithCert(""), 401, 401},
		{"the API server", requestWithCert(pki.ServerClientCN, "kumo:apiserver"), 200, 200},
		{"an administrator", requestWithCert(auth.AdminUser, auth.GroupSystemMasters, auth.GroupAdmins), 200, 403},
		{"the metrics identity", requestWithCert(auth.MetricsUser, auth.GroupMetrics), 200, 403},
		{"a tenant's certificate", requestWithCert("alice", "kumo:tenant:acme", auth.GroupTenants), 403, 403},
		{"a node's certificate", requestWithCert(auth.NodeUserPrefix+"n1", auth.GroupNodes), 403, 403},
		{"a name alone claiming the metrics user", requestWithCert(auth.MetricsUser), 403, 403},
	}
	for _, c := range cases {
		for _, h := range []struct {
			what string
			h    http.Handler
			want int
		}{{"metrics", metrics, c.metrics}, {"stream", streams, c.stream}} {
			w := httptest.NewRecorder()
			h.h.ServeHTTP(w, c.r)
			if w.Code != h.want {
				t.Errorf("%s, %s: status %d, want %d (%s)", c.name, h.what, w.Code, h.want, w.Body.String())
			}
		}
	}
}

func TestDrivesAreNamedAfterTheVolumesOfTheConfiguration(t *testing.T) {
	cfg := qemu.Config{Disks: []qemu.Disk{{ID: "disk0", Name: "sys"}, {ID: "disk1", Name: "data"}, {ID: "cidata"}}}
	got := drivesOf(cfg, []qemu.BlockStats{
		{NodeName: "drive-disk1", WriteBytes: 42}, {NodeName: "drive-cidata", ReadBytes: 7},
		{NodeName: "drive-disk0", ReadBytes: 1}, {NodeName: "pflash-vars"}, {NodeName: "drive-disk9"},
	})
	want := map[string]uint64{"data": 42, "cidata": 7, "sys": 1}
	if len(got) != len(want) {
		t.Fatalf("drives %+v, want %v", got, want)
	}
	for _, d := range got {
		if v, ok := want[d.drive]; !ok || v != d.WriteBytes+d.ReadBytes {
			t.Errorf("drive %s: %+v", d.drive, d.BlockStats)
		}
	}
}

func TestNICStatsAreTheGuestsViewOfItsTap(t *testing.T) {
	dir := t.TempDir()
	old := sysClassNet
	sysClassNet = dir
	t.Cleanup(func() { sysClassNet = old })
	stats := filepath.Join(dir, "tap-vm1", "statistics")
	if err := os.MkdirAll(stats, 0o755); err != nil {
		t.Fatal(err)
	}
	for f, v := range map[string]string{"rx_bytes": "100", "tx_bytes": "2000", "rx_packets": "3", "tx_packets": "40",
		"rx_errors": "0", "tx_errors": "1", "rx_dropped": "5", "tx_dropped": "6"} {
		if err := os.WriteFile(filepath.Join(stats, f), []byte(v+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := readNICStats(qemu.NIC{ID: "net0", Tap: "tap-vm1"})
	if err != nil {
		t.Fatal(err)
	}
	want := nicStats{name: "net0", RxBytes: 2000, TxBytes: 100, RxPackets: 40, TxPackets: 3, RxErrors: 1, TxErrors: 0, RxDropped: 6, TxDropped: 5}
	if got != want {
		t.Errorf("readNICStats = %+v, want %+v", got, want)
	}
	if _, err := readNICStats(qemu.NIC{ID: "net1", Tap: "gone"}); err == nil {
		t.Error("a tap without counters gave statistics")
	}
}
