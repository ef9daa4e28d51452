// Package webui serves Kumo's browser console under /ui/: a static bundle (web/, built by
// `make ui` from npm packages pinned by web/package-lock.json) embedded into kumod. The files hold
// no data and need no authentication; every request the page makes goes to the API itself with the
// user's bearer token (kept in the tab's sessionStorage, never in a cookie).
package webui

import (
	"embed"
	"io/fs"
	"net/http"
	"path"
	"strings"
)

// dist holds the bundle; only a README is committed, so a fresh checkout builds without it.
//
//go:embed all:dist
var dist embed.FS

// Prefix is where the console is served.
const Prefix = "/ui/"

// securityHeaders keep the page to itself: scripts and connections only to this origin (the API
// and its WebSockets), no framing, no referrer leaving with a token-bearing URL. xterm.js and
// noVNC set inline styles, hence 'unsafe-inline' for styles only.
var securityHeaders = map[string]string{
	"Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; " +
		"img-src 'self' data: blob:; connect-src 'self'; worker-src 'self' blob:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
	"X-Content-Type-Options": "nosniff",
	"Referrer-Policy":        "no-referrer",
	"X-Frame-Options":        "DENY",
}

// Mount serves the console under Prefix in front of next (the API's handler chain), redirects
// /ui to /ui/, and sends a browser asking for / (HTML) to the console; everything else goes to
// next untouched.
func Mount(next http.Handler) http.Handler {
	ui := Handler(dist)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch p := r.URL.Path; {
		case strings.HasPrefix(p, Prefix):
			ui.ServeHTTP(w, r)
		case p == strings.TrimSuffix(Prefix, "/") || (p == "/" && r.Method == http.MethodGet && acceptsHTML(r)):
			http.Redirect(w, r, Prefix, http.StatusFound)
		default:
			next.ServeHTTP(w, r)
		}
	})
}

func acceptsHTML(r *http.Request) bool {
	return strings.Contains(r.Header.Get("Accept"), "text/html")
}

// Handler serves the bundle in files (its dist/ directory) under Prefix: index.html for the
// console's root, hashed assets under assets/ (cached for good), and a page saying how to build
// the bundle when it is absent.
func Handler(files fs.FS) http.Handler {
	root, err := fs.Sub(files, "dist")
	if err != nil {
		panic(err) // dist is a literal directory of the embedded tree
	}
	index, indexErr := fs.ReadFile(root, "index.html")
	assets := http.FileServerFS(root)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for k, v := range securityHeaders {
			w.Header().Set(k, v)
		}
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "the console's files are read-only", http.StatusMethodNotAllowed)
			return
		}
		rel := strings.TrimPrefix(path.Clean(r.URL.Path), strings.TrimSuffix(Prefix, "/"))
		switch {
		case rel == "" || rel == "/" || rel == "/index.html":
			if indexErr != nil {
				notBuilt(w)
				return
			}
			w.Header().Set("Content-Type", "text/html; charset=utf-8")
			w.Header().Set("Cache-Control", "no-cache")
			_, _ = w.Write(index)
		case strings.HasPrefix(rel, "/assets/") && !strings.HasSuffix(r.URL.Path, "/"):
			// Asset names carry a hash of their content (web/build.mjs).
			w.Header().Set("Cache-Control", "public, max-age=31536000, immutable")
			r2 := r.Clone(r.Context())
			r2.URL.Path = rel
			assets.ServeHTTP(w, r2)
		default:
			http.NotFound(w, r)
		}
	})
}

const notBuiltPage = `<!doctype html>
<html><head><meta charset="utf-8"><title>Kumo console: UI assets not built</title></head>
<body style="font-family: sans-serif; margin: 3em">
<h1>UI assets not built: run make ui</h1>
<p>This kumod was built without the browser console's bundle. Run <code>make ui</code> (or
<code>make build</code>, which runs it) in the Kumo checkout, then rebuild and restart kumod.</p>
</body></html>
`

func notBuilt(w http.ResponseWriter) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusServiceUnavailable)
	_, _ = w.Write([]byte(notBuiltPage))
}
