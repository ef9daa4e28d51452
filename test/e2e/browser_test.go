package e2e

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/input"
	"github.com/chromedp/chromedp"
)

// newBrowser starts a real headless Chromium (Debian's chromium) for the test, trusting only the
// cluster's serving key (its SPKI pin), and returns the allocator context tabs are opened from.
func newBrowser(t *testing.T, c *Cluster) context.Context {
	t.Helper()
	exe, err := exec.LookPath("chromium")
	if err != nil {
		t.Fatalf("chromium is missing (hack/install-deps.sh installs it): %v", err)
	}
	if _, err := os.Stat(filepath.Join(repoRoot(), "internal", "webui", "dist", "index.html")); err != nil {
		t.Fatalf("the browser console's bundle is missing (run make ui before building kumod): %v", err)
	}
	pemBytes, err := os.ReadFile(filepath.Join(c.Dir, "pki", "server.crt"))
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(pemBytes)
	if block == nil {
		t.Fatal("server.crt holds no PEM block")
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	spki := sha256.Sum256(cert.RawSubjectPublicKeyInfo)
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(exe),
		chromedp.NoSandbox, // the tests run as root
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("ignore-certificate-errors-spki-list", base64.StdEncoding.EncodeToString(spki[:])),
		chromedp.WindowSize(1180, 640),
		chromedp.UserDataDir(t.TempDir()),
	)
	alloc, cancel := chromedp.NewExecAllocator(context.Background(), opts...)
	t.Cleanup(cancel)
	return alloc
}

// newTab opens a tab (its own sessionStorage): from the allocator's context it starts the
// browser, from another tab's context it opens one more tab in that browser.
func newTab(t *testing.T, parent context.Context, name string) context.Context {
	t.Helper()
	ctx, cancel := chromedp.NewContext(parent)
	t.Cleanup(cancel)
	if err := chromedp.Do(ctx); err != nil { // starts the browser (first tab) or the tab
		t.Fatalf("start %s: %v", name, err)
	}
	return ctx
}

// run runs browser actions with a deadline.
func run(t *testing.T, ctx context.Context, timeout time.Duration, actions ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	cctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if err := chromedp.Do(cctx, actions...); err != nil {
		t.Fatalf("browser: %v", err)
	}
}

// eval evaluates JavaScript (awaiting a promise) in the page, with a deadline.
func eval[T any](ctx context.Context, js string) (T, error) {
	cctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	return chromedp.Run(cctx, chromedp.Evaluate[T](js, chromedp.EvalAwaitPromise))
}

// textOf is the visible text of the first element matching selector ("" when there is none).
func textOf(ctx context.Context, selector string) string {
	s, err := eval[string](ctx, `(() => { const e = document.querySelector(`+jsString(selector)+`); return e ? e.innerText : ""; })()`)
	if err != nil {
		return ""
	}
	return s
}

// waitText waits until the element's text contains want and returns the text.
func waitText(t *testing.T, ctx context.Context, selector, want string, timeout time.Duration) string {
	t.Helper()
	var got string
	eventually(t, timeout, selector+" showing "+want, func() bool {
		got = textOf(ctx, selector)
		return strings.Contains(got, want)
	})
	return got
}

func jsString(s string) string {
	r := strings.NewReplacer(`\`, `\\`, "`", "\\`", "$", `\$`)
	return "`" + r.Replace(s) + "`"
}

// screenshot saves a PNG of the page into $KUMO_SCREENSHOTS_DIR (the README's pictures come from
// there) or the test's temporary directory.
func screenshot(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	png, err := chromedp.Run(cctx, chromedp.CaptureScreenshot())
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	dir := os.Getenv("KUMO_SCREENSHOTS_DIR")
	if dir == "" {
		dir = t.TempDir()
	}
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot %s (%d bytes)", path, len(png))
}

// login opens the console in ctx and logs in with what the user pastes (a token or a kubeconfig).
func login(t *testing.T, ctx context.Context, c *Cluster, pasted string) {
	t.Helper()
	run(t, ctx, time.Minute,
		chromedp.Navigate(c.URL()+"/ui/"),
		chromedp.WaitVisible(chromedp.ID("token")),
		chromedp.SetValue(chromedp.ID("token"), pasted),
		chromedp.Click(chromedp.CSS(`button[data-action="login"]`)),
	)
}

// typeLine types line into the focused element as a user's keyboard would reach a terminal: the
// text as inserted text (one input event, as an IME or a paste gives it), then the Enter key.
// (chromedp's SendKeys sends a keydown and a separate char event per key, which xterm.js takes
// as two keystrokes.)
func typeLine(line string) chromedp.Action[chromedp.Void] {
	return chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
		if _, err := cdp.Call(ctx, t, input.InsertText, input.InsertTextParams{Text: line}); err != nil {
			return err
		}
		for _, typ := range []input.DispatchKeyEventType{input.DispatchKeyEventTypeRawKeyDown, input.DispatchKeyEventTypeKeyUp} {
			enter := input.DispatchKeyEventParams{Type: typ, Key: "Enter", Code: "Enter", WindowsVirtualKeyCode: 13, NativeVirtualKeyCode: 13}
			if _, err := cdp.Call(ctx, t, input.DispatchKeyEvent, enter); err != nil {
				return err
			}
		}
		return nil
	})
}
