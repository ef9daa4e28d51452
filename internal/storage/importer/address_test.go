package importer

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
)

// testNets lets the unit tests' httptest servers (on 127.0.0.1) serve imports.
var testNets = Networks{Allowed: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}}

func TestAddressClassifierRefusesInternalAddresses(t *testing.T) {
	old := localAddrs
	localAddrs = func() ([]netip.Addr, error) { return []netip.Addr{netip.MustParseAddr("203.0.113.7")}, nil }
	defer func() { localAddrs = old }()
	nets := Networks{Platform: []netip.Prefix{netip.MustParsePrefix("198.51.100.0/24")}}
	refused := []string{
		"127.0.0.1", "127.0.0.2", "::1", "0.0.0.0", "::", "10.1.2.3", "172.16.0.1", "172.31.255.255",
		"192.168.1.1", "169.254.169.254", "fe80::1", "fd00::1", "fc00::1", "100.64.0.1", "100.127.255.254",
		"224.0.0.1", "239.1.1.1", "ff02::1", "255.255.255.255", "::ffff:127.0.0.1", "::ffff:169.254.169.254",
		"64:ff9b::7f00:1", "2002:7f00:1::", "2002:a00:1::1",
		"198.51.100.9", // the platform's own network
		"203.0.113.7",  // an address of this host
	}
	for _, s := range refused {
		err := nets.Check(netip.MustParseAddr(s))
		var ae *AddressError
		if !errors.As(err, &ae) {
			t.Errorf("%s: allowed, want refused", s)
			continue
		}
		if !strings.Contains(err.Error(), "is not allowed for imports") {
			t.Errorf("%s: message %q", s, err)
		}
	}
	allowed := []string{"8.8.8.8", "1.1.1.1", "100.63.255.255", "100.128.0.0", "172.32.0.1", "2606:4700::1111", "64:ff9b::808:808", "203.0.113.8"}
	for _, s := range allowed {
		if err := nets.Check(netip.MustParseAddr(s)); err != nil {
			t.Errorf("%s: %v, want allowed", s, err)
		}
	}
	// The admin's allow-list opens exactly what it names.
	open := Networks{Allowed: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32"), netip.MustParsePrefix("10.20.0.0/16")}}
	for _, s := range []string{"127.0.0.1", "::ffff:127.0.0.1", "10.20.3.4"} {
		if err := open.Check(netip.MustParseAddr(s)); err != nil {
			t.Errorf("allow-listed %s: %v", s, err)
		}
	}
	for _, s := range []string{"127.0.0.2", "::1", "10.21.0.1"} {
		if err := open.Check(netip.MustParseAddr(s)); err == nil {
			t.Errorf("%s outside the allow-list was allowed", s)
		}
	}
	// Unknown own addresses are not taken for "none".
	localAddrs = func() ([]netip.Addr, error) { return nil, errors.New("netlink down") }
	if err := nets.Check(netip.MustParseAddr("8.8.8.8")); err == nil {
		t.Errorf("with this host's addresses unknown, an address was allowed")
	}
}

// recorder is a server that counts the requests it received.
func recorder(t *testing.T, addr string) (*httptest.Server, *atomic.Int32) {
	t.Helper()
	var hits atomic.Int32
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Skipf("listen on %s: %v", addr, err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		_, _ = w.Write([]byte("secret metrics"))
	}))
	srv.Listener.Close()
	srv.Listener = l
	srv.Start()
	t.Cleanup(srv.Close)
	return srv, &hits
}

func TestDownloadRefusesARedirectToAnAddressOutsideTheAllowList(t *testing.T) {
	for _, target := range []string{"127.0.0.2:0", "[::1]:0"} {
		t.Run(target, func(t *testing.T) {
			victim, hits := recorder(t, target)
			front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				http.Redirect(w, r, victim.URL+"/metrics", http.StatusFound)
			}))
			defer front.Close()
			dst := filepath.Join(t.TempDir(), "dl")
			_, err := Fetch(context.Background(), Source{URL: front.URL + "/redir", Networks: testNets}, dst, nil)
			if !IsRefused(err) || !strings.Contains(err.Error(), "is not allowed for imports") {
				t.Fatalf("redirect from an allowed server to %s: %v, want a refusal", victim.URL, err)
			}
			host, _, _ := net.SplitHostPort(victim.Listener.Addr().String())
			if !strings.Contains(err.Error(), "address "+host+" ") {
				t.Errorf("message does not name the refused address %s: %v", host, err)
			}
			if n := hits.Load(); n != 0 {
				t.Fatalf("the refused target received %d requests", n)
			}
		})
	}
}

func TestDownloadMessagesDoNotTellOpenFromClosedPorts(t *testing.T) {
	open, _ := recorder(t, "127.0.0.2:0")
	l, err := net.Listen("tcp", "127.0.0.2:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := "http://" + l.Addr().String()
	l.Close()
	msg := func(url string) string {
		_, err := Fetch(context.Background(), Source{URL: url + "/x"}, filepath.Join(t.TempDir(), "dl"), nil)
		if !IsRefused(err) {
			t.Fatalf("%s: %v, want a refusal", url, err)
		}
		// The URL is the tenant's own; what follows it must be the same.
		return strings.ReplaceAll(err.Error(), url, "URL")
	}
	if a, b := msg(open.URL), msg(closed); a != b {
		t.Fatalf("open and closed ports answer differently:\n%s\n%s", a, b)
	}
}

func TestDownloadRefusesCredentialsInURLs(t *testing.T) {
	srv, hits := recorder(t, "127.0.0.1:0")
	u := strings.Replace(srv.URL, "http://", "http://user:hunter2@", 1) + "/x.raw"
	_, err := Fetch(context.Background(), Source{URL: u, Networks: testNets}, filepath.Join(t.TempDir(), "dl"), nil)
	if !IsRefused(err) || !strings.Contains(err.Error(), "credentials") || strings.Contains(err.Error(), "hunter2") {
		t.Fatalf("URL with credentials: %v", err)
	}
	// Nor through a redirect.
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, u, http.StatusFound)
	}))
	defer front.Close()
	_, err = Fetch(context.Background(), Source{URL: front.URL + "/r", Networks: testNets}, filepath.Join(t.TempDir(), "dl"), nil)
	if !IsRefused(err) || !strings.Contains(err.Error(), "credentials") || strings.Contains(err.Error(), "hunter2") {
		t.Fatalf("redirect to a URL with credentials: %v", err)
	}
	if n := hits.Load(); n != 0 {
		t.Fatalf("the server received %d requests carrying credentials", n)
	}
}

func TestParseNetworks(t *testing.T) {
	got, err := ParseNetworks([]string{"127.0.0.1/32", " 10.0.0.0/8", "::1", "192.168.1.7/24", ""})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"127.0.0.1/32", "10.0.0.0/8", "::1/128", "192.168.1.0/24"}
	if len(got) != len(want) {
		t.Fatalf("got %v", got)
	}
	for i := range want {
		if got[i].String() != want[i] {
			t.Errorf("%d: got %s, want %s", i, got[i], want[i])
		}
	}
	if _, err := ParseNetworks([]string{"not-a-cidr"}); err == nil || !strings.Contains(err.Error(), "not-a-cidr") {
		t.Errorf("bad network: %v", err)
	}
}

// The check is on the address connected to, never the name: a name resolving to loopback is
// refused like the address itself.
func TestDownloadChecksTheResolvedAddressNotTheName(t *testing.T) {
	srv, hits := recorder(t, "127.0.0.1:0")
	_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
	_, err := Fetch(context.Background(), Source{URL: "http://localhost:" + port + "/x.raw"}, filepath.Join(t.TempDir(), "dl"), nil)
	if !IsRefused(err) || !strings.Contains(err.Error(), "is not allowed for imports (loopback)") {
		t.Fatalf("localhost without an allow-list: %v", err)
	}
	if n := hits.Load(); n != 0 {
		t.Fatalf("the server received %d requests", n)
	}
}
