// Package auth decides who a request comes from and what it may do: identities (admins, tenant
// users, nodes) are carried in Kubernetes user groups; tokens are HMAC-signed claims the server
// issues and verifies without storing them; the policy confines each tenant to its namespace.
package auth

import (
	"strings"

	"k8s.io/apiserver/pkg/authentication/user"
)

const (
	// GroupAdmins may do everything (system:masters is honoured too).
	GroupAdmins = "kumo:admins"
	// GroupTenantPrefix + tenant name is the group of a tenant's users.
	GroupTenantPrefix = "kumo:tenant:"
	// GroupTenants holds every tenant user.
	GroupTenants = "kumo:tenants"
	// GroupNodes holds every node agent; its user name is NodeUserPrefix + node name.
	GroupNodes = "kumo:nodes"
	// NodeUserPrefix prefixes a node's name to form its user name.
	NodeUserPrefix = "kumo:node:"
	// AdminUser is the user of the kubeconfig kumod writes.
	AdminUser = "kumo-admin"
	// GroupMetrics may read the metrics of the API servers (/metrics) and of the agents, and
	// nothing else; MetricsUser is the user of the credentials kumo metrics kubeconfig issues.
	GroupMetrics = "kumo:metrics"
	MetricsUser  = "kumo:metrics"
	// GroupSystemMasters is Kubernetes' group of unrestricted users, honoured like GroupAdmins.
	GroupSystemMasters = user.SystemPrivilegedGroup
)

// TenantOf returns the tenant a user belongs to, or "" for none.
func TenantOf(u user.Info) string {
	for _, g := range u.GetGroups() {
		if t, ok := strings.CutPrefix(g, GroupTenantPrefix); ok {
			return t
		}
	}
	return ""
}

// NodeOf returns the node a user is, or "" when it is not a node.
func NodeOf(u user.Info) string {
	if !hasGroup(u, GroupNodes) {
		return ""
	}
	n, _ := strings.CutPrefix(u.GetName(), NodeUserPrefix)
	return n
}

// IsMetricsReader says whether the user is the metrics identity.
func IsMetricsReader(u user.Info) bool { return hasGroup(u, GroupMetrics) }

// IsAdmin says whether the user is an administrator.
func IsAdmin(u user.Info) bool {
	return hasGroup(u, user.SystemPrivilegedGroup) || hasGroup(u, GroupAdmins)
}

func hasGroup(u user.Info, group string) bool {
	for _, g := range u.GetGroups() {
		if g == group {
			return true
		}
	}
	return false
}
