package auth

import (
	"testing"

	"k8s.io/apiserver/pkg/authentication/user"
	"k8s.io/apiserver/pkg/authorization/authorizer"
)

// The servers' loopback identity (system:apiserver in system:masters) and admins reach Leases;
// tenants and nodes do not (nodes get their own leases with the HA work).
func TestLeasesOnlyForAdminsAndServers(t *testing.T) {
	loopback := &user.DefaultInfo{Name: user.APIServerUser, Groups: []string{user.SystemPrivilegedGroup}}
	for _, verb := range []string{"get", "list", "watch", "create", "update", "delete"} {
		for _, c := range []struct {
			who  user.Info
			want authorizer.Decision
		}{
			{loopback, authorizer.DecisionAllow}, {admin, authorizer.DecisionAllow}, {kumoAdmin, authorizer.DecisionAllow},
			{tenantUser, authorizer.DecisionNoOpinion}, {nodeUser, authorizer.DecisionNoOpinion}, {stranger, authorizer.DecisionNoOpinion},
		} {
			a := res(c.who, verb, "coordination.k8s.io", "leases", "kumo-system", "kumo-controllers")
			if got, reason := Decide(a); got != c.want {
				t.Errorf("%s %s leases: %v (%s), want %v", c.who.GetName(), verb, got, reason, c.want)
			}
		}
	}
	// Not even in the tenant's own namespace.
	if got, _ := Decide(res(tenantUser, "create", "coordination.k8s.io", "leases", "tenant-acme", "x")); got == authorizer.DecisionAllow {
		t.Error("a tenant may create leases in its namespace")
	}
}
