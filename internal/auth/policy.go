package auth

import (
	"context"
	"fmt"
	"strings"

	"k8s.io/apimachinery/pkg/selection"
	"k8s.io/apiserver/pkg/authorization/authorizer"
)

const (
	groupApps = "apps.cozystack.io"
	groupKumo = "kumo.dev"
)

const (
	// MetricsPath is where the API server serves its Prometheus metrics (k8s.io/apiserver's own).
	MetricsPath = "/metrics"
	// MetricsCertificatePath issues client certificates to the metrics identity (POST; only
	// administrators may, like every path this policy does not open).
	MetricsCertificatePath = "/kumo/v1/metrics/certificate"
)

var readVerbs = map[string]bool{"get": true, "list": true, "watch": true}

// publicPaths are the non-resource paths any authenticated user may read: discovery, OpenAPI,
// version, health, and who the server takes the user for.
var publicPaths = []string{"/api", "/apis", "/openapi/", "/version", "/kumo/version", "/kumo/whoami", "/healthz", "/readyz", "/livez"}

// Authorizer is the server's authorization policy.
func Authorizer() authorizer.Authorizer {
	return authorizer.AuthorizerFunc(func(ctx context.Context, a authorizer.Attributes) (authorizer.Decision, string, error) {
		d, reason := Decide(a)
		return d, reason, nil
	})
}

// Decide applies the policy: admins reach everything; a tenant's users reach their own namespace
// and read the catalogue (instance types, profiles); nodes reach what an agent needs.
func Decide(a authorizer.Attributes) (authorizer.Decision, string) {
	u := a.GetUser()
	if u == nil {
		return authorizer.DecisionNoOpinion, "no user"
	}
	if IsAdmin(u) {
		return authorizer.DecisionAllow, ""
	}
	if !a.IsResourceRequest() {
		if readVerbs[a.GetVerb()] && isPublicPath(a.GetPath()) {
			return authorizer.DecisionAllow, ""
		}
		if a.GetVerb() == "get" && a.GetPath() == MetricsPath && IsMetricsReader(u) {
			return authorizer.DecisionAllow, ""
		}
		return authorizer.DecisionNoOpinion, "only discovery, OpenAPI, version and health paths are open"
	}
	if readVerbs[a.GetVerb()] && a.GetAPIGroup() == groupKumo && a.GetSubresource() == "" &&
		(a.GetResource() == "instancetypes" || a.GetResource() == "instanceprofiles" || a.GetResource() == "goldenimages") {
		return authorizer.DecisionAllow, ""
	}
	// kubectl lists CRDs to check a kind it does not know; Kumo answers with an empty list.
	if a.GetVerb() == "list" && a.GetAPIGroup() == "apiextensions.k8s.io" && a.GetResource() == "customresourcedefinitions" {
		return authorizer.DecisionAllow, ""
	}
	if t := TenantOf(u); t != "" {
		return decideTenant(a, t)
	}
	if n := NodeOf(u); n != "" {
		return decideNode(a, n)
	}
	return authorizer.DecisionNoOpinion, fmt.Sprintf("user %q belongs to no tenant", u.GetName())
}

func decideTenant(a authorizer.Attributes, tenant string) (authorizer.Decision, string) {
	ns := "tenant-" + tenant
	switch {
	case a.GetAPIGroup() == groupApps && (a.GetResource() == "vminstances" || a.GetResource() == "vmdisks"):
		// Status belongs to Kumo: tenants read it but never write it; disk keys go to nodes only.
		if a.GetNamespace() == ns && a.GetSubresource() != "diskkey" && (a.GetSubresource() != "status" || readVerbs[a.GetVerb()]) {
			return authorizer.DecisionAllow, ""
		}
	case a.GetAPIGroup() == "" && a.GetResource() == "events":
		if a.GetNamespace() == ns && readVerbs[a.GetVerb()] {
			return authorizer.DecisionAllow, ""
		}
	case a.GetAPIGroup() == "" && a.GetResource() == "namespaces" && a.GetSubresource() == "":
		if a.GetName() == ns && a.GetVerb() == "get" {
			return authorizer.DecisionAllow, ""
		}
	case a.GetAPIGroup() == groupKumo && a.GetResource() == "tenants" && a.GetSubresource() == "":
		if a.GetName() == tenant && a.GetVerb() == "get" {
			return authorizer.DecisionAllow, ""
		}
	}
	return authorizer.DecisionNoOpinion, fmt.Sprintf("users of tenant %q may only reach namespace %q", tenant, ns)
}

// decideNode grants an agent what running its VMs needs and nothing about other nodes' VMs:
// its own Node; list/watch of the VMs and disks placed on it (the request must select
// status.node=<node>). What depends on the objects is decided by the API server
// (internal/apiserver/node_access.go): reads of disks by name (placed on the node or named by its
// VMs), of a disk's upload and key (placed on it); status writes (its own VMs and disks, never
// moving them; golden image imports still undecided); and events (about its own VMs and disks).
func decideNode(a authorizer.Attributes, node string) (authorizer.Decision, string) {
	res, sub, verb := a.GetResource(), a.GetSubresource(), a.GetVerb()
	switch {
	case a.GetAPIGroup() == groupKumo && res == "nodes":
		if a.GetName() == node && (readVerbs[verb] || verb == "update" || verb == "patch") {
			return authorizer.DecisionAllow, ""
		}
		if a.GetName() == node && sub == "token" && verb == "create" { // the agent renews its own token
			return authorizer.DecisionAllow, ""
		}
		if verb == "create" && sub == "" {
			return authorizer.DecisionAllow, ""
		}
	case a.GetAPIGroup() == groupApps && res == "vminstances":
		if sub == "" && (verb == "list" || verb == "watch") && selectsNode(a, node) {
			return authorizer.DecisionAllow, ""
		}
		if sub == "status" && (verb == "update" || verb == "patch") {
			return authorizer.DecisionAllow, ""
		}
		if sub == "diskkey" && verb == "get" { // the handler checks that the VM is bound to this node
			return authorizer.DecisionAllow, ""
		}
		if sub == "" && (verb == "list" || verb == "watch") {
			return authorizer.DecisionNoOpinion, fmt.Sprintf("node %q may only list the VMs bound to it (fieldSelector=status.node=%s)", node, node)
		}
	case a.GetAPIGroup() == groupKumo && res == "goldenimages":
		if sub == "upload" && verb == "get" {
			return authorizer.DecisionAllow, ""
		}
		if sub == "status" && (verb == "update" || verb == "patch") {
			return authorizer.DecisionAllow, ""
		}
	case a.GetAPIGroup() == groupApps && res == "vmdisks":
		// The handler of diskkey checks that the disk is placed on this node.
		if (sub == "" || sub == "upload" || sub == "diskkey") && verb == "get" {
			return authorizer.DecisionAllow, ""
		}
		if sub == "" && (verb == "list" || verb == "watch") && selectsNode(a, node) {
			return authorizer.DecisionAllow, ""
		}
		if sub == "status" && (verb == "update" || verb == "patch") {
			return authorizer.DecisionAllow, ""
		}
	case a.GetAPIGroup() == "" && res == "events":
		if verb == "create" || verb == "patch" || verb == "update" {
			return authorizer.DecisionAllow, ""
		}
	}
	return authorizer.DecisionNoOpinion, fmt.Sprintf("node %q may not %s %s", node, verb, strings.TrimSuffix(res+"/"+sub, "/"))
}

// selectsNode says whether a list/watch selects exactly the VMs bound to node.
func selectsNode(a authorizer.Attributes, node string) bool {
	reqs, err := a.GetFieldSelector()
	if err != nil {
		return false
	}
	for _, r := range reqs {
		if r.Field == "status.node" && (r.Operator == selection.Equals || r.Operator == selection.DoubleEquals) && r.Value == node {
			return true
		}
	}
	return false
}

func isPublicPath(p string) bool {
	for _, pp := range publicPaths {
		if p == pp || strings.HasPrefix(p, pp+"/") || (strings.HasSuffix(pp, "/") && strings.HasPrefix(p, pp)) {
			return true
		}
	}
	return false
}
