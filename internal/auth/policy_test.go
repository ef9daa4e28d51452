package auth

import (
	"context"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/selection"
	"strings"
	"testing"

	"k8s.io/apiserver/pkg/authentication/user"
	"k8s.io/apiserver/pkg/authorization/authorizer"
)

var (
	admin      = &user.DefaultInfo{Name: "kumo-admin", Groups: []string{user.SystemPrivilegedGroup, user.AllAuthenticated}}
	kumoAdmin  = &user.DefaultInfo{Name: "ops", Groups: []string{GroupAdmins}}
	tenantUser = &user.DefaultInfo{Name: "alice", Groups: []string{"kumo:tenant:acme", "kumo:tenants"}}
	nodeUser   = &user.DefaultInfo{Name: "kumo:node:n1", Groups: []string{"kumo:nodes"}}
	// A user that merely calls itself a node but lacks the group is no node.
	fakeNode = &user.DefaultInfo{Name: "kumo:node:n1"}
	stranger = &user.DefaultInfo{Name: "mallory", Groups: []string{user.AllAuthenticated}}
	metrics  = &user.DefaultInfo{Name: MetricsUser, Groups: []string{GroupMetrics, user.AllAuthenticated}}
)

// res is a resource request.
func res(u user.Info, verb, group, resource, ns, name string) authorizer.AttributesRecord {
	return authorizer.AttributesRecord{User: u, Verb: verb, APIGroup: group, APIVersion: "v1alpha1",
		Resource: resource, Namespace: ns, Name: name, ResourceRequest: true}
}

func sub(a authorizer.AttributesRecord, subresource string) authorizer.AttributesRecord {
	a.Subresource = subresource
	return a
}

// path is a non-resource request.
func path(u user.Info, verb, p string) authorizer.AttributesRecord {
	return authorizer.AttributesRecord{User: u, Verb: verb, Path: p}
}

const apps, kumo = "apps.cozystack.io", "kumo.dev"

func TestDecide(t *testing.T) {
	allow, deny := authorizer.DecisionAllow, authorizer.DecisionNoOpinion
	cases := []struct {
		name string
		attr authorizer.AttributesRecord
		want authorizer.Decision
	}{
		// Admins.
		{"admin deletes a tenant", res(admin, "delete", kumo, "tenants", "", "acme"), allow},
		{"admin creates a VM in any tenant", res(admin, "create", apps, "vminstances", "tenant-other", ""), allow},
		{"admin lists VMs across namespaces", res(admin, "list", apps, "vminstances", "", ""), allow},
		{"admin creates instance types", res(admin, "create", kumo, "instancetypes", "", ""), allow},
		{"admin updates nodes", res(admin, "update", kumo, "nodes", "", "n2"), allow},
		{"admin reads /metrics", path(admin, "get", "/metrics"), allow},

		// The metrics identity reads /metrics and nothing a tenant or node owns.
		{"metrics identity reads /metrics", path(metrics, "get", "/metrics"), allow},
		{"metrics identity may not reset /metrics", path(metrics, "delete", "/metrics"), deny},
		{"metrics identity may not profile", path(metrics, "get", "/debug/pprof/profile"), deny},
		{"metrics identity may not list VMs", res(metrics, "list", apps, "vminstances", "", ""), deny},
		{"metrics identity may not read tenants", res(metrics, "get", kumo, "tenants", "", "acme"), deny},
		{"metrics identity may not read nodes", res(metrics, "get", kumo, "nodes", "", "n1"), deny},
		{"tenant may not read /metrics", path(tenantUser, "get", "/metrics"), deny},
		{"node may not read /metrics", path(nodeUser, "get", "/metrics"), deny},
		{"stranger may not read /metrics", path(stranger, "get", "/metrics"), deny},
		{"admin deletes namespaces", res(admin, "delete", "", "namespaces", "", "tenant-acme"), allow},
		{"kumo:admins group is an admin too", res(kumoAdmin, "delete", kumo, "tenants", "", "acme"), allow},

		// Tenant users in their own namespace.
		{"tenant creates a VM in its namespace", res(tenantUser, "create", apps, "vminstances", "tenant-acme", ""), allow},
		{"tenant gets a VM in its namespace", res(tenantUser, "get", apps, "vminstances", "tenant-acme", "vm1"), allow},
		{"tenant lists VMs in its namespace", res(tenantUser, "list", apps, "vminstances", "tenant-acme", ""), allow},
		{"tenant watches VMs in its namespace", res(tenantUser, "watch", apps, "vminstances", "tenant-acme", ""), allow},
		{"tenant deletes a VM in its namespace", res(tenantUser, "delete", apps, "vminstances", "tenant-acme", "vm1"), allow},
		{"tenant creates a disk in its namespace", res(tenantUser, "create", apps, "vmdisks", "tenant-acme", ""), allow},
		{"tenant gets a disk in its namespace", res(tenantUser, "get", apps, "vmdisks", "tenant-acme", "d1"), allow},
		{"tenant lists disks in its namespace", res(tenantUser, "list", apps, "vmdisks", "tenant-acme", ""), allow},
		{"tenant watches disks in its namespace", res(tenantUser, "watch", apps, "vmdisks", "tenant-acme", ""), allow},
		{"tenant deletes a disk in its namespace", res(tenantUser, "delete", apps, "vmdisks", "tenant-acme", "d1"), allow},

		// Tenant users elsewhere.
		{"tenant creates a VM in another tenant", res(tenantUser, "create", apps, "vminstances", "tenant-other", ""), deny},
		{"tenant gets a VM in another tenant", res(tenantUser, "get", apps, "vminstances", "tenant-other", "vm1"), deny},
		{"tenant deletes a disk in another tenant", res(tenantUser, "delete", apps, "vmdisks", "tenant-other", "d1"), deny},
		{"tenant lists VMs at cluster scope", res(tenantUser, "list", apps, "vminstances", "", ""), deny},
		{"tenant watches disks at cluster scope", res(tenantUser, "watch", apps, "vmdisks", "", ""), deny},
		{"tenant reaches a namespace that merely starts with its own", res(tenantUser, "get", apps, "vminstances", "tenant-acme2", "vm1"), deny},
		{"tenant VMs in another API group are not granted", res(tenantUser, "create", "kubevirt.io", "vminstances", "tenant-acme", ""), deny},

		// Catalogue.
		{"tenant gets an instance type", res(tenantUser, "get", kumo, "instancetypes", "", "u1.medium"), allow},
		{"tenant lists instance types", res(tenantUser, "list", kumo, "instancetypes", "", ""), allow},
		{"tenant lists instance profiles", res(tenantUser, "list", kumo, "instanceprofiles", "", ""), allow},
		{"tenant creates an instance type", res(tenantUser, "create", kumo, "instancetypes", "", ""), deny},
		{"tenant deletes an instance profile", res(tenantUser, "delete", kumo, "instanceprofiles", "", "ubuntu"), deny},
		{"tenant updates an instance type", res(tenantUser, "update", kumo, "instancetypes", "", "u1.medium"), deny},

		// Tenants, namespaces and events.
		{"tenant lists tenants", res(tenantUser, "list", kumo, "tenants", "", ""), deny},
		{"tenant gets its own tenant", res(tenantUser, "get", kumo, "tenants", "", "acme"), allow},
		{"tenant gets another tenant", res(tenantUser, "get", kumo, "tenants", "", "other"), deny},
		{"tenant deletes its own tenant", res(tenantUser, "delete", kumo, "tenants", "", "acme"), deny},
		{"tenant mints a token of its own tenant", sub(res(tenantUser, "create", kumo, "tenants", "", "acme"), "token"), deny},
		{"tenant gets its own namespace", res(tenantUser, "get", "", "namespaces", "", "tenant-acme"), allow},
		{"tenant gets another namespace", res(tenantUser, "get", "", "namespaces", "", "tenant-other"), deny},
		{"tenant deletes its own namespace", res(tenantUser, "delete", "", "namespaces", "", "tenant-acme"), deny},
		{"tenant lists events in its namespace", res(tenantUser, "list", "", "events", "tenant-acme", ""), allow},
		{"tenant watches events in its namespace", res(tenantUser, "watch", "", "events", "tenant-acme", ""), allow},
		{"tenant creates events in its namespace", res(tenantUser, "create", "", "events", "tenant-acme", ""), deny},
		{"tenant lists events in another namespace", res(tenantUser, "list", "", "events", "tenant-other", ""), deny},
		{"tenant lists events at cluster scope", res(tenantUser, "list", "", "events", "", ""), deny},
		{"tenant lists nodes", res(tenantUser, "list", kumo, "nodes", "", ""), deny},

		// Non-resource paths.
		{"tenant reads /apis", path(tenantUser, "get", "/apis"), allow},
		{"tenant reads /apis/apps.cozystack.io/v1alpha1", path(tenantUser, "get", "/apis/apps.cozystack.io/v1alpha1"), allow},
		{"tenant reads /openapi/v3", path(tenantUser, "get", "/openapi/v3"), allow},
		{"node reads /openapi/v2", path(nodeUser, "get", "/openapi/v2"), allow},
		{"stranger reads /version", path(stranger, "get", "/version"), allow},
		{"stranger reads /healthz", path(stranger, "get", "/healthz"), allow},
		{"tenant reads /kumo/whoami", path(tenantUser, "get", "/kumo/whoami"), allow},
		{"tenant posts to /kumo/whoami", path(tenantUser, "post", "/kumo/whoami"), deny},
		{"stranger reads /api", path(stranger, "get", "/api"), allow},
		{"tenant reads /metrics", path(tenantUser, "get", "/metrics"), deny},
		{"stranger reads /metrics", path(stranger, "get", "/metrics"), deny},
		{"tenant reads /apisx (prefix of a public path)", path(tenantUser, "get", "/apisx"), deny},
		{"tenant posts to /apis", path(tenantUser, "post", "/apis"), deny},
		{"tenant reads /debug/pprof", path(tenantUser, "get", "/debug/pprof/"), deny},

		// Nodes.
		{"node updates its own node", res(nodeUser, "update", kumo, "nodes", "", "n1"), allow},
		{"node patches its own node", res(nodeUser, "patch", kumo, "nodes", "", "n1"), allow},
		{"node gets its own node", res(nodeUser, "get", kumo, "nodes", "", "n1"), allow},
		{"node registers itself", res(nodeUser, "create", kumo, "nodes", "", ""), allow},
		{"node updates another node", res(nodeUser, "update", kumo, "nodes", "", "n2"), deny},
		{"node deletes its own node", res(nodeUser, "delete", kumo, "nodes", "", "n1"), deny},
		{"node updates VM status", sub(res(nodeUser, "update", apps, "vminstances", "tenant-acme", "vm1"), "status"), allow},
		{"node patches disk status", sub(res(nodeUser, "patch", apps, "vmdisks", "tenant-acme", "d1"), "status"), allow},
		{"node lists VMs without selecting its own", res(nodeUser, "list", apps, "vminstances", "", ""), deny},
		{"node watches the VMs bound to it", selecting(res(nodeUser, "watch", apps, "vminstances", "", ""), "n1"), allow},
		{"node watches the VMs of another node", selecting(res(nodeUser, "watch", apps, "vminstances", "", ""), "n2"), deny},
		{"node gets a VM by name", res(nodeUser, "get", apps, "vminstances", "tenant-acme", "vm1"), deny},
		{"node gets a disk by name", res(nodeUser, "get", apps, "vmdisks", "tenant-acme", "d1"), allow},
		{"node watches disks", res(nodeUser, "watch", apps, "vmdisks", "", ""), deny},
		{"node deletes a VM", res(nodeUser, "delete", apps, "vminstances", "tenant-acme", "vm1"), deny},
		{"node updates a VM's spec", res(nodeUser, "update", apps, "vminstances", "tenant-acme", "vm1"), deny},
		{"node creates a VM", res(nodeUser, "create", apps, "vminstances", "tenant-acme", ""), deny},
		{"node creates events", res(nodeUser, "create", "", "events", "tenant-acme", ""), allow},
		{"node reads instance types", res(nodeUser, "get", kumo, "instancetypes", "", "u1.medium"), allow},
		{"node lists tenants", res(nodeUser, "list", kumo, "tenants", "", ""), deny},
		{"user named like a node without the group is no node", res(fakeNode, "update", kumo, "nodes", "", "n1"), deny},

		// Others.
		{"user in no tenant gets a VM", res(stranger, "get", apps, "vminstances", "tenant-acme", "vm1"), deny},
		{"user in no tenant lists instance types", res(stranger, "list", kumo, "instancetypes", "", ""), allow},
		{"request without a user", authorizer.AttributesRecord{Verb: "get", Path: "/apis"}, deny},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, reason := Decide(tc.attr)
			if got != tc.want {
				t.Errorf("Decide = %v (%q), want %v", got, reason, tc.want)
			}
			if got == authorizer.DecisionNoOpinion && reason == "" {
				t.Error("a denial must give a reason")
			}
			if got == authorizer.DecisionDeny {
				t.Error("the policy should say NoOpinion, never Deny, so other authorizers may still allow")
			}
		})
	}
}

func TestDecideTenantDenialNamesTheTenantNamespace(t *testing.T) {
	for _, attr := range []authorizer.AttributesRecord{
		res(tenantUser, "create", apps, "vminstances", "tenant-other", ""),
		res(tenantUser, "list", apps, "vmdisks", "", ""),
		res(tenantUser, "list", kumo, "tenants", "", ""),
		res(tenantUser, "create", kumo, "instancetypes", "", ""),
	} {
		d, reason := Decide(attr)
		if d != authorizer.DecisionNoOpinion {
			t.Fatalf("%s %s in %q: %v, want NoOpinion", attr.Verb, attr.Resource, attr.Namespace, d)
		}
		if !strings.Contains(reason, `"tenant-acme"`) || !strings.Contains(reason, `"acme"`) {
			t.Errorf("%s %s in %q: reason %q should name tenant acme and namespace tenant-acme", attr.Verb, attr.Resource, attr.Namespace, reason)
		}
	}
}

func TestDecideReasons(t *testing.T) {
	cases := []struct {
		name string
		attr authorizer.AttributesRecord
		want string
	}{
		{"node denial names node, verb and resource", res(nodeUser, "delete", apps, "vminstances", "tenant-acme", "vm1"), `node "n1" may not delete vminstances`},
		{"stranger denial names the user", res(stranger, "get", apps, "vminstances", "tenant-acme", "vm1"), `user "mallory" belongs to no tenant`},
		{"non-resource denial says what is open", path(tenantUser, "get", "/metrics"), "discovery"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, reason := Decide(tc.attr)
			if !strings.Contains(reason, tc.want) {
				t.Errorf("reason %q should contain %q", reason, tc.want)
			}
		})
	}
}

func TestAuthorizerAppliesDecide(t *testing.T) {
	a := Authorizer()
	d, _, err := a.Authorize(context.Background(), res(tenantUser, "get", apps, "vminstances", "tenant-acme", "vm1"))
	if err != nil || d != authorizer.DecisionAllow {
		t.Errorf("own VM: %v %v, want Allow", d, err)
	}
	d, reason, err := a.Authorize(context.Background(), res(tenantUser, "get", apps, "vminstances", "tenant-other", "vm1"))
	if err != nil || d != authorizer.DecisionNoOpinion || !strings.Contains(reason, "tenant-acme") {
		t.Errorf("other tenant's VM: %v %q %v, want NoOpinion naming tenant-acme", d, reason, err)
	}
}

func TestIdentityHelpers(t *testing.T) {
	if TenantOf(tenantUser) != "acme" || TenantOf(nodeUser) != "" || TenantOf(admin) != "" {
		t.Errorf("TenantOf = %q %q %q, want acme, none, none", TenantOf(tenantUser), TenantOf(nodeUser), TenantOf(admin))
	}
	if NodeOf(nodeUser) != "n1" || NodeOf(fakeNode) != "" || NodeOf(tenantUser) != "" {
		t.Errorf("NodeOf = %q %q %q, want n1, none, none", NodeOf(nodeUser), NodeOf(fakeNode), NodeOf(tenantUser))
	}
	if !IsAdmin(admin) || !IsAdmin(kumoAdmin) || IsAdmin(tenantUser) || IsAdmin(nodeUser) {
		t.Error("IsAdmin should hold for system:masters and kumo:admins only")
	}
}

// selecting adds fieldSelector=status.node=<node> to a request.
func selecting(a authorizer.AttributesRecord, node string) authorizer.AttributesRecord {
	a.FieldSelectorRequirements = fields.Requirements{{Field: "status.node", Operator: selection.Equals, Value: node}}
	return a
}

// TestDecideSubresources: the streaming and action subresources follow the tenant boundary;
// status and disk keys are never a tenant's to write or read; a node's credentials reach only
// what running its VMs needs.
func TestDecideSubresources(t *testing.T) {
	allow, deny := authorizer.DecisionAllow, authorizer.DecisionNoOpinion
	other := &user.DefaultInfo{Name: "eve", Groups: []string{"kumo:tenant:other", "kumo:tenants"}}
	cases := []struct {
		name string
		attr authorizer.AttributesRecord
		want authorizer.Decision
	}{
		{"tenant opens the console of its VM", sub(res(tenantUser, "get", apps, "vminstances", "tenant-acme", "vm1"), "console"), allow},
		{"tenant opens the VNC of its VM", sub(res(tenantUser, "get", apps, "vminstances", "tenant-acme", "vm1"), "vnc"), allow},
		{"tenant starts its VM", sub(res(tenantUser, "update", apps, "vminstances", "tenant-acme", "vm1"), "start"), allow},
		{"tenant uploads to its disk", sub(res(tenantUser, "create", apps, "vmdisks", "tenant-acme", "d1"), "upload"), allow},
		{"tenant deletes its disks as a collection", res(tenantUser, "deletecollection", apps, "vmdisks", "tenant-acme", ""), allow},
		{"another tenant opens the console", sub(res(other, "get", apps, "vminstances", "tenant-acme", "vm1"), "console"), deny},
		{"another tenant opens the VNC", sub(res(other, "get", apps, "vminstances", "tenant-acme", "vm1"), "vnc"), deny},
		{"another tenant stops the VM", sub(res(other, "update", apps, "vminstances", "tenant-acme", "vm1"), "stop"), deny},
		{"another tenant uploads to the disk", sub(res(other, "create", apps, "vmdisks", "tenant-acme", "d1"), "upload"), deny},
		{"another tenant deletes the disks as a collection", res(other, "deletecollection", apps, "vmdisks", "tenant-acme", ""), deny},
		{"tenant reads its VM's status", sub(res(tenantUser, "get", apps, "vminstances", "tenant-acme", "vm1"), "status"), allow},
		{"tenant writes its VM's status", sub(res(tenantUser, "update", apps, "vminstances", "tenant-acme", "vm1"), "status"), deny},
		{"tenant patches its disk's status", sub(res(tenantUser, "patch", apps, "vmdisks", "tenant-acme", "d1"), "status"), deny},
		{"tenant reads its VM's disk key", sub(res(tenantUser, "get", apps, "vminstances", "tenant-acme", "vm1"), "diskkey"), deny},
		{"tenant reads its disk's key", sub(res(tenantUser, "get", apps, "vmdisks", "tenant-acme", "d1"), "diskkey"), deny},
		{"tenant reads tenant keys", res(tenantUser, "get", kumo, "tenantkeys", "", "acme"), deny},
		{"tenant reads a golden image", res(tenantUser, "get", kumo, "goldenimages", "", "debian"), allow},
		{"tenant uploads a golden image", sub(res(tenantUser, "create", kumo, "goldenimages", "", "debian"), "upload"), deny},
		{"tenant creates a namespace", res(tenantUser, "create", "", "namespaces", "", ""), deny},

		{"node reads the disk key of a VM (the handler checks the binding)", sub(res(nodeUser, "get", apps, "vminstances", "tenant-acme", "vm1"), "diskkey"), allow},
		{"node fetches a disk's upload", sub(res(nodeUser, "get", apps, "vmdisks", "tenant-acme", "d1"), "upload"), allow},
		{"node uploads to a disk", sub(res(nodeUser, "create", apps, "vmdisks", "tenant-acme", "d1"), "upload"), deny},
		{"node fetches a golden image's upload", sub(res(nodeUser, "get", kumo, "goldenimages", "", "debian"), "upload"), allow},
		{"node opens a VM's console", sub(res(nodeUser, "get", apps, "vminstances", "tenant-acme", "vm1"), "console"), deny},
		{"node starts a VM", sub(res(nodeUser, "update", apps, "vminstances", "tenant-acme", "vm1"), "start"), deny},
		{"node writes a disk's spec", res(nodeUser, "update", apps, "vmdisks", "tenant-acme", "d1"), deny},
		{"node deletes a disk", res(nodeUser, "delete", apps, "vmdisks", "tenant-acme", "d1"), deny},
		{"node lists disks", res(nodeUser, "list", apps, "vmdisks", "", ""), deny},
		{"node renews its own token (bound to its Node)", sub(res(nodeUser, "create", kumo, "nodes", "", "n1"), "token"), allow},
		{"node mints a token for another node", sub(res(nodeUser, "create", kumo, "nodes", "", "n2"), "token"), deny},
		{"node mints a tenant token", sub(res(nodeUser, "create", kumo, "tenants", "", "acme"), "token"), deny},
		{"node reads tenant keys", res(nodeUser, "get", kumo, "tenantkeys", "", "acme"), deny},
		{"node writes a golden image's spec", res(nodeUser, "update", kumo, "goldenimages", "", "debian"), deny},
		{"node lists events", res(nodeUser, "list", "", "events", "tenant-acme", ""), deny},
		{"node selects its VMs with !=", notSelecting(res(nodeUser, "list", apps, "vminstances", "", ""), "n2"), deny},
		{"user named like a node without the group writes VM status", sub(res(fakeNode, "update", apps, "vminstances", "tenant-acme", "vm1"), "status"), deny},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got, reason := Decide(tc.attr); got != tc.want {
				t.Errorf("Decide = %v (%q), want %v", got, reason, tc.want)
			}
		})
	}
}

// notSelecting adds fieldSelector=status.node!=<node>: every node but one, which is not "mine".
func notSelecting(a authorizer.AttributesRecord, node string) authorizer.AttributesRecord {
	a.FieldSelectorRequirements = fields.Requirements{{Field: "status.node", Operator: selection.NotEquals, Value: node}}
	return a
}
