package apiserver

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strconv"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/proxy"
	genericapirequest "k8s.io/apiserver/pkg/endpoints/request"
	"k8s.io/apiserver/pkg/registry/rest"

	"kumo.dev/kumo/internal/apiserver/registry"
	apps "kumo.dev/kumo/pkg/apis/apps/v1alpha1"
	kumo "kumo.dev/kumo/pkg/apis/kumo/v1alpha1"
)

// vmStream serves vminstances/NAME/console and /vnc: after the request is authenticated and
// authorized like any other of the tenant, the server proxies the (WebSocket) stream to the agent
// of the node running the VM, presenting its client certificate; it trusts the agent through the
// certificate the agent published in its Node status. Connections to each agent are pooled
// (agentTransports).
type vmStream struct {
	kind       string // "console" or "vnc"
	vms, nodes *registry.Storage
	agents     *agentTransports
}

var _ rest.Connecter = &vmStream{}

func (s *vmStream) New() runtime.Object { return &apps.VMConsoleOptions{} }
func (s *vmStream) Destroy()            {}

func (s *vmStream) NewConnectOptions() (runtime.Object, bool, string) {
	return &apps.VMConsoleOptions{}, false, ""
}

func (s *vmStream) ConnectMethods() []string { return []string{http.MethodGet, http.MethodPost} }

func (s *vmStream) Connect(ctx context.Context, name string, options runtime.Object, responder rest.Responder) (http.Handler, error) {
	opts := options.(*apps.VMConsoleOptions)
	got, err := s.vms.Get(ctx, name, &metav1.GetOptions{})
	if err != nil {
		return nil, err
	}
	vm := got.(*apps.VMInstance)
	nodeName, incarnation := vm.Status.Node, vm.Status.Incarnation
	if nodeName == "" && opts.ShowLog && vm.Status.LastExit != nil && vm.Status.LastExit.Node != "" {
		// A stopped VM: the node its last incarnation ran on keeps that incarnation's log.
		nodeName, incarnation = vm.Status.LastExit.Node, vm.Status.LastExit.Incarnation
	}
	if nodeName == "" {
		return nil, apierrors.NewConflict(apps.Resource("vminstances"), name, fmt.Errorf("VM is not running on any node (phase %s)", vm.Status.Phase))
	}
	if s.kind == "vnc" && vm.Status.Phase != apps.VMRunning {
		return nil, apierrors.NewConflict(apps.Resource("vminstances"), name, fmt.Errorf("VM is not running (phase %s)", vm.Status.Phase))
	}
	nodeObj, err := s.nodes.Get(genericapirequest.WithNamespace(ctx, ""), nodeName, &metav1.GetOptions{})
	if err != nil {
		return nil, apierrors.NewServiceUnavailable(fmt.Sprintf("node %s of VM %s: %v", nodeName, name, err))
	}
	node := nodeObj.(*kumo.Node)
	if node.Status.AgentEndpoint == "" || node.Status.AgentCertificate == "" {
		return nil, apierrors.NewServiceUnavailable(fmt.Sprintf("the agent of node %s has not published its endpoint", node.Name))
	}
	transport, err := s.agents.forNode(node)
	if err != nil {
		return nil, apierrors.NewInternalError(err)
	}
	loc, err := url.Parse(node.Status.AgentEndpoint)
	if err != nil {
		return nil, apierrors.NewInternalError(fmt.Errorf("node %s agent endpoint: %w", node.Name, err))
	}
	loc.Path = fmt.Sprintf("/v1/vms/%s/%s/%s", vm.Namespace, vm.Name, s.kind)
	q := url.Values{"incarnation": {strconv.FormatInt(incarnation, 10)}, "uid": {string(vm.UID)}}
	if opts.ShowLog {
		q.Set("showLog", "true")
	}
	loc.RawQuery = q.Encode()
	h := proxy.NewUpgradeAwareHandler(loc, transport, false, !opts.ShowLog, proxy.NewErrorResponder(responder))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		stripBearerProtocols(r.Header)
		h.ServeHTTP(w, r)
	}), nil
}
