package e2e

import (
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/gorilla/websocket"

	apps "kumo.dev/kumo/pkg/apis/apps/v1alpha1"
	kumo "kumo.dev/kumo/pkg/apis/kumo/v1alpha1"
)

const (
	vmRow       = `table[data-kind="vminstances"] tr[data-name="vm1"]`
	vmPhaseCell = vmRow + ` td[data-field="phase"]`
	terminal    = `#console .xterm-rows`
)

// tenantToken mints a token for a user of tenant with `kumo tenant token`.
func tenantToken(t *testing.T, c *Cluster, tenant string) string {
	t.Helper()
	return strings.TrimSpace(c.MustKumo(t, c.AdminKubeconfig(), "tenant", "token", tenant))
}

// subprotocolToken is how a browser carries a token on a WebSocket (Kubernetes' convention).
func subprotocolToken(token string) string {
	return "base64url.bearer.authorization.k8s.io." + base64.RawURLEncoding.EncodeToString([]byte(token))
}

// dialStream opens path on the API as a WebSocket offering protocols (no other credentials) and
// returns the HTTP status of the handshake and the subprotocol the server chose.
func dialStream(t *testing.T, c *Cluster, path string, protocols ...string) (int, string) {
	t.Helper()
	d := websocket.Dialer{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, HandshakeTimeout: 20 * time.Second, Subprotocols: protocols} //nolint:gosec // a throwaway test server on loopback
	ws, resp, err := d.Dial(strings.Replace(c.URL(), "https://", "wss://", 1)+path, nil)
	if err != nil && resp == nil {
		t.Fatalf("dial %s: %v", path, err)
	}
	if ws != nil {
		defer ws.Close()
		return resp.StatusCode, ws.Subprotocol()
	}
	return resp.StatusCode, ""
}

// The browser console, in real headless Chromium against an all-in-one Kumo: a tenant logs in
// (with its kubeconfig), watches its VM appear and run, uses the serial console and VNC, and
// starts/stops/restarts it; another tenant sees none of it and is refused when it asks directly.
func TestWebConsoleTenantRunsItsVMFromTheBrowser(t *testing.T) {
	c := startAllInOne(t)
	kcA := c.NewTenant(t, "weba")
	c.NewTenant(t, "webb")
	tokenA, tokenB := tenantToken(t, c, "weba"), tenantToken(t, c, "webb")
	nsA := kumo.TenantNamespace("weba")
	cl := c.Client(t, kcA)
	alloc := newBrowser(t, c)

	tabA := newTab(t, alloc, "tenant weba")
	kubeconfig, err := os.ReadFile(kcA)
	if err != nil {
		t.Fatal(err)
	}
	login(t, tabA, c, string(kubeconfig))
	waitText(t, tabA, `[data-field="identity"]`, "tenant weba", 30*time.Second)
	waitText(t, tabA, `[data-field="vms-state"]`, "live", 30*time.Second)

	t.Run("VMAppearsAndRunsLiveThroughWatches", func(t *testing.T) {
		// Created after the page listed an empty tenant: only the watch can bring it.
		if r := Run(kcA, tinyVM("vm1", "sys1", ""), bins.kumo, "apply", "-f", "-"); r.Err != nil {
			t.Fatal(r)
		}
		waitText(t, tabA, `table[data-kind="vmdisks"] tr[data-name="sys1"] td[data-field="phase"]`, "Ready", bootTimeout)
		waitText(t, tabA, vmPhaseCell, "Running", bootTimeout)
		vm := getVM(t, cl, nsA, "vm1")
		row := textOf(tabA, vmRow)
		for _, want := range []string{vm.Status.Node, vm.Status.Datacenter, "s1.small", "Always"} {
			if !strings.Contains(row, want) {
				t.Errorf("VM row %q lacks %q", row, want)
			}
		}
		if disk := textOf(tabA, `table[data-kind="vmdisks"] tr[data-name="sys1"]`); !strings.Contains(disk, "local") || !strings.Contains(disk, "aio") {
			t.Errorf("disk row %q", disk)
		}
		screenshot(t, tabA, "webui-vms.png")
	})

	t.Run("SerialConsoleShowsTheMarkerAndRunsACommand", func(t *testing.T) {
		run(t, tabA, 30*time.Second, chromedp.Click(chromedp.CSS(vmRow+` a[data-action="console"]`)))
		waitText(t, tabA, `[data-field="stream-state"]`, "connected", 30*time.Second)
		waitText(t, tabA, terminal, "KUMO-GUEST-READY hostname=vm1", bootTimeout)
		// The echo shows the command as typed; only the guest's shell prints web-42.
		run(t, tabA, 30*time.Second,
			chromedp.Focus(chromedp.CSS(`#console .xterm-helper-textarea`)),
			typeLine("echo web-$((40+2))"))
		deadline := time.Now().Add(time.Minute)
		for !strings.Contains(textOf(tabA, terminal), "web-42") {
			if time.Now().After(deadline) {
				screenshot(t, tabA, "webui-console-failed.png")
				log := c.Kumo(kcA, "console", "vm1", "--show-log")
				t.Fatalf("the terminal never showed web-42; terminal:\n%s\nstream state %q\nserial log tail:\n%s",
					textOf(tabA, terminal), textOf(tabA, `[data-field="stream-state"]`), tail(log.Stdout, 10))
			}
			time.Sleep(500 * time.Millisecond)
		}
		screenshot(t, tabA, "webui-console.png")
	})

	t.Run("VNCPaintsTheGuestScreen", func(t *testing.T) {
		run(t, tabA, 30*time.Second, chromedp.Navigate(c.URL()+"/ui/#/"), chromedp.WaitVisible(chromedp.CSS(vmRow+` a[data-action="vnc"]`)),
			chromedp.Click(chromedp.CSS(vmRow+` a[data-action="vnc"]`)))
		waitText(t, tabA, `[data-field="stream-state"]`, "connected", time.Minute)
		type pixels struct{ W, H, Painted, Lit int }
		var px pixels
		eventually(t, time.Minute, "the VNC canvas painted with the guest's screen", func() bool {
			var err error
			px, err = eval[pixels](tabA, `(() => {
				const c = document.querySelector("#vnc canvas");
				if (!c || !c.width || !c.height) return {W: 0, H: 0, Painted: 0, Lit: 0};
				const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
				let painted = 0, lit = 0;
				for (let i = 0; i < d.length; i += 4) {
					if (d[i + 3]) painted++;
					if (d[i] | d[i + 1] | d[i + 2]) lit++;
				}
				return {W: c.width, H: c.height, Painted: painted, Lit: lit};
			})()`)
			return err == nil && px.Painted > 0 && px.Lit > 0
		})
		t.Logf("VNC canvas %dx%d: %d pixels painted, %d not black", px.W, px.H, px.Painted, px.Lit)
	})

	t.Run("StopStartRestartFromTheList", func(t *testing.T) {
		run(t, tabA, 30*time.Second, chromedp.Navigate(c.URL()+"/ui/#/"), chromedp.WaitVisible(chromedp.CSS(vmRow)))
		waitText(t, tabA, vmPhaseCell, "Running", 30*time.Second)
		click := func(action string) {
			t.Helper()
			sel := vmRow + fmt.Sprintf(` button[data-action=%q]:not([disabled])`, action)
			run(t, tabA, 30*time.Second, chromedp.WaitVisible(chromedp.CSS(sel)), chromedp.Click(chromedp.CSS(sel)))
			waitText(t, tabA, `[data-field="flash"]`, action+" vm1: asked", 30*time.Second)
		}
		click("stop")
		waitText(t, tabA, vmPhaseCell, "Stopped", 2*time.Minute)
		if vm := getVM(t, cl, nsA, "vm1"); vm.Spec.RunStrategy != apps.RunHalted {
			t.Errorf("after Stop: runStrategy %s", vm.Spec.RunStrategy)
		}
		click("start")
		waitText(t, tabA, vmPhaseCell, "Running", bootTimeout)
		before := getVM(t, cl, nsA, "vm1").Status.Incarnation
		click("restart")
		vm := waitVM(t, cl, nsA, "vm1", "a new incarnation running", bootTimeout, func(vm *apps.VMInstance) bool {
			return vm.Status.Incarnation > before && running(vm)
		})
		waitText(t, tabA, vmPhaseCell, "Running", 30*time.Second)
		t.Logf("incarnation %d after stop, start and restart", vm.Status.Incarnation)
	})

	t.Run("OtherTenantSeesNothingAndIsRefused", func(t *testing.T) {
		tabB := newTab(t, tabA, "tenant webb") // another tab of the same browser: its own sessionStorage
		login(t, tabB, c, tokenB)
		waitText(t, tabB, `[data-field="identity"]`, "tenant webb", 30*time.Second)
		waitText(t, tabB, `[data-field="vms-state"]`, "live", 30*time.Second)
		if list := textOf(tabB, `table[data-kind="vminstances"]`); !strings.Contains(list, "No VMs yet") || strings.Contains(list, "vm1") {
			t.Errorf("tenant webb's VM list: %q", list)
		}
		// Direct requests from B's page, with B's token, for A's VM.
		type statuses struct{ Get, Action, Log int }
		base := "/apis/apps.cozystack.io/v1alpha1/namespaces/" + nsA + "/vminstances/vm1"
		js := `(async () => {
			const auth = {Authorization: "Bearer " + sessionStorage.getItem("kumo.token")};
			const get = await fetch("` + base + `", {headers: auth});
			const action = await fetch("` + base + `/stop", {method: "POST", headers: Object.assign({"Content-Type": "application/json"}, auth),
				body: JSON.stringify({apiVersion: "apps.cozystack.io/v1alpha1", kind: "VMStateChange"})});
			const log = await fetch("` + base + `/console?showLog=true", {headers: auth});
			return {Get: get.status, Action: action.status, Log: log.status};
		})()`
		got, err := eval[statuses](tabB, js)
		if err != nil {
			t.Fatal(err)
		}
		if got.Get != http.StatusForbidden || got.Action != http.StatusForbidden || got.Log != http.StatusForbidden {
			t.Errorf("tenant webb's direct requests for weba's VM: get %d, stop %d, serial log %d; want 403 each", got.Get, got.Action, got.Log)
		}
		// B's console page for A's VM: the stream is refused and nothing of A's guest shows.
		run(t, tabB, 30*time.Second, chromedp.Navigate(c.URL()+"/ui/#/console/"+nsA+"/vm1"))
		waitText(t, tabB, `[data-field="stream-state"]`, "closed", 30*time.Second)
		if term := textOf(tabB, terminal); strings.Contains(term, "KUMO-GUEST-READY") {
			t.Errorf("tenant webb's console shows weba's guest: %q", term)
		}
		if vm := getVM(t, cl, nsA, "vm1"); !running(vm) || vm.Spec.RunStrategy != apps.RunAlways {
			t.Errorf("weba's VM after webb's attempts: phase %s runStrategy %s", vm.Status.Phase, vm.Spec.RunStrategy)
		}
	})

	t.Run("SubprotocolTokenOpensOnlyItsTenantsStreams", func(t *testing.T) {
		console := "/apis/apps.cozystack.io/v1alpha1/namespaces/" + nsA + "/vminstances/vm1/console"
		if code, proto := dialStream(t, c, console, subprotocolToken(tokenA), "stream.kumo.dev"); code != http.StatusSwitchingProtocols || proto != "stream.kumo.dev" {
			t.Errorf("weba's token on weba's console: %d, subprotocol %q; want 101 with stream.kumo.dev", code, proto)
		}
		if code, _ := dialStream(t, c, strings.TrimSuffix(console, "console")+"vnc", subprotocolToken(tokenA), "stream.kumo.dev"); code != http.StatusSwitchingProtocols {
			t.Errorf("weba's token on weba's VNC: %d, want 101", code)
		}
		if code, _ := dialStream(t, c, console, subprotocolToken(tokenB), "stream.kumo.dev"); code != http.StatusForbidden {
			t.Errorf("webb's token on weba's console: %d, want 403", code)
		}
		// Not a stream: a watch over WebSocket does not take a token from the subprotocol.
		watch := "/apis/apps.cozystack.io/v1alpha1/namespaces/" + nsA + "/vminstances?watch=1"
		if code, _ := dialStream(t, c, watch, subprotocolToken(tokenA), "stream.kumo.dev"); code != http.StatusUnauthorized {
			t.Errorf("weba's token in the subprotocol of a watch: %d, want 401", code)
		}
	})
}
