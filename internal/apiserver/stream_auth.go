package apiserver

import (
	"errors"
	"net/http"
	"net/textproto"
	"strings"

	"k8s.io/apiserver/pkg/authentication/authenticator"
	"k8s.io/apiserver/pkg/authentication/request/websocket"
	genericapirequest "k8s.io/apiserver/pkg/endpoints/request"

	apps "kumo.dev/kumo/pkg/apis/apps/v1alpha1"
)

// bearerProtocolPrefix is how Kubernetes carries a bearer token in a WebSocket subprotocol
// (base64url.bearer.authorization.k8s.io.<base64url token>): browsers cannot set an
// Authorization header on a WebSocket.
const bearerProtocolPrefix = "base64url.bearer.authorization.k8s.io."

var protocolHeader = textproto.CanonicalMIMEHeaderKey("Sec-WebSocket-Protocol")

// errProtocolTokenElsewhere refuses a subprotocol token on any request but a VM stream.
var errProtocolTokenElsewhere = errors.New("a bearer token in the WebSocket subprotocol is accepted only on vminstances/NAME/console and vminstances/NAME/vnc")

// streamProtocolAuthenticator accepts a token in the WebSocket subprotocol on the VM console and
// VNC streams only (what the browser console opens). Everywhere else (watches, which may be
// WebSockets too, and every other request) such a token is refused, so a token a page put in a
// subprotocol opens nothing but a stream the tenant may open anyway.
type streamProtocolAuthenticator struct {
	protocol *websocket.ProtocolAuthenticator
}

func newStreamProtocolAuthenticator(tokens authenticator.Token) authenticator.Request {
	return streamProtocolAuthenticator{protocol: websocket.NewProtocolAuthenticator(tokens)}
}

func (a streamProtocolAuthenticator) AuthenticateRequest(req *http.Request) (*authenticator.Response, bool, error) {
	if !hasBearerProtocol(req.Header) {
		return nil, false, nil
	}
	if !isVMStreamRequest(req) {
		return nil, false, errProtocolTokenElsewhere
	}
	return a.protocol.AuthenticateRequest(req)
}

// isVMStreamRequest says whether req opens vminstances/NAME/console or /vnc (the request info
// is resolved before authentication runs).
func isVMStreamRequest(req *http.Request) bool {
	info, ok := genericapirequest.RequestInfoFrom(req.Context())
	if !ok || !info.IsResourceRequest || info.Verb != "get" {
		return false
	}
	return info.APIGroup == apps.GroupName && info.Resource == "vminstances" && info.Name != "" &&
		(info.Subresource == "console" || info.Subresource == "vnc")
}

func hasBearerProtocol(h http.Header) bool {
	for _, v := range h[protocolHeader] {
		for _, p := range strings.Split(v, ",") {
			if strings.HasPrefix(strings.TrimSpace(p), bearerProtocolPrefix) {
				return true
			}
		}
	}
	return false
}

// stripBearerProtocols removes any token subprotocol before a stream is proxied to an agent: the
// authenticator removes the one it accepted, but a request authenticated otherwise (a client
// certificate) may still carry one, and no token goes further than the API server.
func stripBearerProtocols(h http.Header) {
	if !hasBearerProtocol(h) {
		return
	}
	var keep []string
	for _, v := range h[protocolHeader] {
		for _, p := range strings.Split(v, ",") {
			if p = strings.TrimSpace(p); p != "" && !strings.HasPrefix(p, bearerProtocolPrefix) {
				keep = append(keep, p)
			}
		}
	}
	h.Del(protocolHeader)
	if len(keep) > 0 {
		h.Set(protocolHeader, strings.Join(keep, ", "))
	}
}
