package webui

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"testing/fstest"
)

var built = fstest.MapFS{
	"dist/README":              {Data: []byte("placeholder")},
	"dist/index.html":          {Data: []byte(`<!doctype html><script type="module" src="assets/main-ABC.js"></script>`)},
	"dist/assets/main-ABC.js":  {Data: []byte("console.log('kumo')")},
	"dist/assets/main-DEF.css": {Data: []byte("body{}")},
}

func serve(h http.Handler, method, path string, header map[string]string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(method, path, nil)
	for k, v := range header {
		req.Header.Set(k, v)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

func TestUIServesIndexUncachedAndHashedAssetsForGood(t *testing.T) {
	h := Handler(built)
	for _, p := range []string{"/ui/", "/ui/index.html"} {
		rec := serve(h, http.MethodGet, p, nil)
		if rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), "assets/main-ABC.js") {
			t.Errorf("GET %s: %d %q", p, rec.Code, rec.Body.String())
		}
		if cc := rec.Header().Get("Cache-Control"); cc != "no-cache" {
			t.Errorf("GET %s: Cache-Control %q, want no-cache", p, cc)
		}
		if csp := rec.Header().Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") || !strings.Contains(csp, "frame-ancestors 'none'") {
			t.Errorf("GET %s: Content-Security-Policy %q", p, csp)
		}
	}
	rec := serve(h, http.MethodGet, "/ui/assets/main-ABC.js", nil)
	if rec.Code != http.StatusOK || rec.Body.String() != "console.log('kumo')" {
		t.Fatalf("asset: %d %q", rec.Code, rec.Body.String())
	}
	if ct := rec.Header().Get("Content-Type"); !strings.Contains(ct, "javascript") {
		t.Errorf("asset Content-Type %q", ct)
	}
	if cc := rec.Header().Get("Cache-Control"); !strings.Contains(cc, "immutable") {
		t.Errorf("asset Cache-Control %q", cc)
	}
	if rec := serve(h, http.MethodHead, "/ui/assets/main-DEF.css", nil); rec.Code != http.StatusOK {
		t.Errorf("HEAD asset: %d", rec.Code)
	}
}

func TestUIListsNoDirectoriesAndServesNothingOutsideItsBundle(t *testing.T) {
	h := Handler(built)
	for _, p := range []string{"/ui/assets/", "/ui/README", "/ui/assets/missing.js", "/ui/../ui/README", "/ui/nope"} {
		if rec := serve(h, http.MethodGet, p, nil); rec.Code != http.StatusNotFound {
			t.Errorf("GET %s: %d, want 404", p, rec.Code)
		}
	}
}

func TestUIRefusesWrites(t *testing.T) {
	rec := serve(Handler(built), http.MethodPost, "/ui/", nil)
	if rec.Code != http.StatusMethodNotAllowed || rec.Header().Get("Allow") != "GET, HEAD" {
		t.Errorf("POST /ui/: %d Allow %q", rec.Code, rec.Header().Get("Allow"))
	}
}

func TestUIWithoutBundleSaysToRunMakeUI(t *testing.T) {
	h := Handler(fstest.MapFS{"dist/README": {Data: []byte("placeholder")}})
	rec := serve(h, http.MethodGet, "/ui/", nil)
	if rec.Code != http.StatusServiceUnavailable || !strings.Contains(rec.Body.String(), "UI assets not built: run make ui") {
		t.Errorf("GET /ui/ without a bundle: %d %q", rec.Code, rec.Body.String())
	}
}

// The committed tree embeds at least the placeholder, so a fresh checkout builds and serves the
// not-built page (or the bundle, once make ui ran).
func TestEmbeddedBundleServesIndexOrTheNotBuiltPage(t *testing.T) {
	rec := serve(Handler(dist), http.MethodGet, "/ui/", nil)
	switch rec.Code {
	case http.StatusOK:
		if !strings.Contains(rec.Body.String(), `type="module"`) {
			t.Errorf("embedded index.html: %q", rec.Body.String())
		}
	case http.StatusServiceUnavailable:
		if !strings.Contains(rec.Body.String(), "run make ui") {
			t.Errorf("not-built page: %q", rec.Body.String())
		}
	default:
		t.Errorf("GET /ui/: %d", rec.Code)
	}
}

func TestMountRoutesTheConsoleAndLeavesTheAPIAlone(t *testing.T) {
	api := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-API", "yes")
		w.WriteHeader(http.StatusUnauthorized)
	})
	h := Mount(api)
	cases := []struct {
		method, path, accept string
		code                 int
		location             string
		api                  bool
	}{
		{"GET", "/ui", "", http.StatusFound, "/ui/", false},
		{"GET", "/", "text/html,application/xhtml+xml", http.StatusFound, "/ui/", false},
		{"GET", "/", "application/json", http.StatusUnauthorized, "", true},
		{"GET", "/apis", "text/html", http.StatusUnauthorized, "", true},
		{"GET", "/uix", "", http.StatusUnauthorized, "", true},
		{"POST", "/", "text/html", http.StatusUnauthorized, "", true},
	}
	for _, c := range cases {
		rec := serve(h, c.method, c.path, map[string]string{"Accept": c.accept})
		if rec.Code != c.code || rec.Header().Get("Location") != c.location || (rec.Header().Get("X-API") == "yes") != c.api {
			t.Errorf("%s %s (Accept %q): %d Location %q api %v", c.method, c.path, c.accept, rec.Code, rec.Header().Get("Location"), rec.Header().Get("X-API"))
		}
	}
}
