package apiserver

import (
	"context"
	"encoding/base64"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/apiserver/pkg/authentication/authenticator"
	"k8s.io/apiserver/pkg/authentication/user"
	genericapirequest "k8s.io/apiserver/pkg/endpoints/request"
)

// fixedTokens accepts one token.
type fixedTokens map[string]string

func (f fixedTokens) AuthenticateToken(_ context.Context, token string) (*authenticator.Response, bool, error) {
	if name, ok := f[token]; ok {
		return &authenticator.Response{User: &user.DefaultInfo{Name: name}}, true, nil
	}
	return nil, false, nil
}

var resolver = &genericapirequest.RequestInfoFactory{APIPrefixes: sets.NewString("api", "apis"), GrouplessAPIPrefixes: sets.NewString("api")}

// wsRequest is a WebSocket upgrade to path offering protocols, with its request info resolved as
// the handler chain does before authentication.
func wsRequest(t *testing.T, path string, protocols ...string) *http.Request {
	t.Helper()
	req := httptest.NewRequest(http.MethodGet, path, nil)
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", "websocket")
	req.Header.Set("Sec-WebSocket-Protocol", strings.Join(protocols, ", "))
	info, err := resolver.NewRequestInfo(req)
	if err != nil {
		t.Fatal(err)
	}
	return req.WithContext(genericapirequest.WithRequestInfo(req.Context(), info))
}

func bearerProtocol(token string) string {
	return bearerProtocolPrefix + base64.RawURLEncoding.EncodeToString([]byte(token))
}

const vmPath = "/apis/apps.cozystack.io/v1alpha1/namespaces/tenant-acme/vminstances/vm1"

func TestSubprotocolTokenAuthenticatesConsoleAndVNCAndIsRemoved(t *testing.T) {
	a := newStreamProtocolAuthenticator(fixedTokens{"good": "alice"})
	for _, kind := range []string{"console", "vnc"} {
		req := wsRequest(t, vmPath+"/"+kind, bearerProtocol("good"), "stream.kumo.dev")
		resp, ok, err := a.AuthenticateRequest(req)
		if !ok || err != nil || resp.User.GetName() != "alice" {
			t.Fatalf("%s: ok %v err %v", kind, ok, err)
		}
		if got := req.Header.Get("Sec-WebSocket-Protocol"); got != "stream.kumo.dev" {
			t.Errorf("%s: protocols left for the agent %q, want only stream.kumo.dev", kind, got)
		}
	}
}

func TestSubprotocolTokenIsRefusedOutsideVMStreams(t *testing.T) {
	a := newStreamProtocolAuthenticator(fixedTokens{"good": "alice"})
	for _, path := range []string{
		"/apis/apps.cozystack.io/v1alpha1/namespaces/tenant-acme/vminstances?watch=1",
		vmPath,
		vmPath + "/start",
		"/apis/apps.cozystack.io/v1alpha1/namespaces/tenant-acme/vmdisks/d1/upload",
		"/apis/kumo.dev/v1alpha1/tenants/acme/token",
		"/kumo/whoami",
		"/apis/other.example/v1/namespaces/tenant-acme/vminstances/vm1/console",
	} {
		req := wsRequest(t, path, bearerProtocol("good"), "stream.kumo.dev")
		if _, ok, err := a.AuthenticateRequest(req); ok || err == nil || !strings.Contains(err.Error(), "accepted only on vminstances/NAME/console") {
			t.Errorf("%s: ok %v err %v, want refused", path, ok, err)
		}
	}
}

func TestSubprotocolTokenRefusedWhenInvalidOrAlone(t *testing.T) {
	a := newStreamProtocolAuthenticator(fixedTokens{"good": "alice"})
	if _, ok, err := a.AuthenticateRequest(wsRequest(t, vmPath+"/console", bearerProtocol("forged"), "stream.kumo.dev")); ok || err == nil {
		t.Errorf("unknown token: ok %v err %v", ok, err)
	}
	// Without another subprotocol there would be nothing to echo once the token is removed.
	if _, ok, err := a.AuthenticateRequest(wsRequest(t, vmPath+"/console", bearerProtocol("good"))); ok || err == nil {
		t.Errorf("token alone: ok %v err %v", ok, err)
	}
	// No token in the subprotocols: not this authenticator's request.
	if _, ok, err := a.AuthenticateRequest(wsRequest(t, vmPath+"/console", "stream.kumo.dev")); ok || err != nil {
		t.Errorf("no token: ok %v err %v", ok, err)
	}
}

func TestStreamsNeverForwardATokenSubprotocolToTheAgent(t *testing.T) {
	h := http.Header{}
	h.Add("Sec-WebSocket-Protocol", bearerProtocol("good")+", stream.kumo.dev")
	h.Add("Sec-WebSocket-Protocol", "other")
	stripBearerProtocols(h)
	if got := h.Values("Sec-WebSocket-Protocol"); len(got) != 1 || got[0] != "stream.kumo.dev, other" {
		t.Errorf("protocols after stripping: %q", got)
	}
	h = http.Header{}
	h.Set("Sec-WebSocket-Protocol", bearerProtocol("good"))
	stripBearerProtocols(h)
	if _, ok := h[protocolHeader]; ok {
		t.Errorf("a header of only the token should go: %q", h.Values("Sec-WebSocket-Protocol"))
	}
}
