package e2e

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	apps "kumo.dev/kumo/pkg/apis/apps/v1alpha1"
	kumo "kumo.dev/kumo/pkg/apis/kumo/v1alpha1"
)

// victim is a loopback server outside the test's allow-list (127.0.0.1/32) that records every
// request it receives.
type victim struct {
	*httptest.Server
	hits atomic.Int32
}

func newVictim(t *testing.T, addr string) *victim {
	t.Helper()
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("listen on %s: %v", addr, err)
	}
	v := &victim{}
	v.Server = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		v.hits.Add(1)
		fmt.Fprintln(w, "internal metrics")
	}))
	v.Server.Listener.Close()
	v.Server.Listener = l
	v.Start()
	t.Cleanup(v.Close)
	return v
}

// An import from an allow-listed server (127.0.0.1) that redirects to a loopback address outside
// the allow-list (127.0.0.2, [::1]) fails with the reason, and the target never sees a request;
// so does a golden image; URLs carrying credentials are refused at the API.
func TestImportRedirectOutsideTheAllowListFails(t *testing.T) {
	c := startAllInOne(t)
	v4, v6 := newVictim(t, "127.0.0.2:0"), newVictim(t, "[::1]:0")
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/to-v4":
			http.Redirect(w, r, v4.URL+"/metrics", http.StatusFound)
		case "/to-v6":
			http.Redirect(w, r, v6.URL+"/metrics", http.StatusFound)
		default:
			http.NotFound(w, r)
		}
	}))
	defer front.Close()
	kc := c.NewTenant(t, "ssrf")
	cl := c.Client(t, kc)
	ns := kumo.TenantNamespace("ssrf")
	for name, path := range map[string]string{"to-v4": "/to-v4", "to-v6": "/to-v6"} {
		if r := Run(kc, httpDisk(name, front.URL+path), bins.kumo, "apply", "-f", "-"); r.Err != nil {
			t.Fatal(r)
		}
	}
	for name, addr := range map[string]string{"to-v4": "127.0.0.2", "to-v6": "::1"} {
		want := "address " + addr + " is not allowed for imports"
		var last apps.VMDiskStatus
		eventually(t, 2*time.Minute, name+" to fail with "+want, func() bool {
			d := &apps.VMDisk{}
			if cl.Apps.Get().Namespace(ns).Resource("vmdisks").Name(name).Do(context.Background()).Into(d) != nil {
				return false
			}
			last = d.Status
			if d.Status.Phase != apps.DiskFailed {
				return false
			}
			for _, cond := range d.Status.Conditions {
				if strings.Contains(cond.Message, want) {
					return true
				}
			}
			return false
		})
		t.Logf("%s: %s %+v", name, last.Phase, last.Conditions)
	}

	// A golden image follows the same rules with its own allow-list (127.0.0.1/32 in the tests).
	c.MustKumo(t, c.AdminKubeconfig(), "image", "import", "redirected", "--url", front.URL+"/to-v4")
	admin := c.Client(t, c.AdminKubeconfig())
	eventually(t, 2*time.Minute, "the golden image to fail with its reason", func() bool {
		g := &kumo.GoldenImage{}
		if admin.Kumo.Get().Resource("goldenimages").Name("redirected").Do(context.Background()).Into(g) != nil || g.Status.Phase != kumo.GoldenImageFailed {
			return false
		}
		for _, cond := range g.Status.Conditions {
			if strings.Contains(cond.Message, "address 127.0.0.2 is not allowed for imports") {
				return true
			}
		}
		return false
	})
	if n4, n6 := v4.hits.Load(), v6.hits.Load(); n4 != 0 || n6 != 0 {
		t.Fatalf("refused targets received requests: 127.0.0.2 %d, [::1] %d", n4, n6)
	}

	// Credentials in URLs are refused before anything is stored, and never echoed.
	r := Run(kc, httpDisk("with-creds", strings.Replace(front.URL, "http://", "http://user:hunter2@", 1)+"/x.raw"), bins.kumo, "apply", "-f", "-")
	if r.Err == nil || !strings.Contains(r.Stderr, "spec.source.http.url") || !strings.Contains(r.Stderr, "credentials") || strings.Contains(r.Stderr, "hunter2") {
		t.Fatalf("disk URL with credentials: %s", r)
	}
	if err := cl.Apps.Get().Namespace(ns).Resource("vmdisks").Name("with-creds").Do(context.Background()).Error(); err == nil {
		t.Fatal("a disk whose URL carries credentials was stored")
	}
	r = c.Kumo(c.AdminKubeconfig(), "image", "import", "creds", "--url", "https://admin:hunter2@mirror.example/os.qcow2")
	if r.Err == nil || !strings.Contains(r.Stderr, "credentials") || strings.Contains(r.Stderr, "hunter2") {
		t.Fatalf("golden image URL with credentials: %s", r)
	}
}
