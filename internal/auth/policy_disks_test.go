package auth

import (
	"testing"

	"k8s.io/apiserver/pkg/authorization/authorizer"
)

// A node prepares the disks placed on it before any VM uses them: it watches exactly those disks
// and reads their tenant's key (the handler checks the placement); tenants never read keys.
func TestNodeWatchesItsPlacedDisksAndReadsTheirKey(t *testing.T) {
	allow, deny := authorizer.DecisionAllow, authorizer.DecisionNoOpinion
	cases := []struct {
		name string
		attr authorizer.AttributesRecord
		want authorizer.Decision
	}{
		{"node watches the disks placed on it", selecting(res(nodeUser, "watch", apps, "vmdisks", "", ""), "n1"), allow},
		{"node lists the disks placed on it", selecting(res(nodeUser, "list", apps, "vmdisks", "", ""), "n1"), allow},
		{"node watches every disk", res(nodeUser, "watch", apps, "vmdisks", "", ""), deny},
		{"node watches another node's disks", selecting(res(nodeUser, "watch", apps, "vmdisks", "", ""), "n2"), deny},
		{"node gets a disk's key", sub(res(nodeUser, "get", apps, "vmdisks", "tenant-acme", "d1"), "diskkey"), allow},
		{"node writes a disk's key", sub(res(nodeUser, "update", apps, "vmdisks", "tenant-acme", "d1"), "diskkey"), deny},
		{"tenant gets its disk's key", sub(res(tenantUser, "get", apps, "vmdisks", "tenant-acme", "d1"), "diskkey"), deny},
		{"stranger gets a disk's key", sub(res(stranger, "get", apps, "vmdisks", "tenant-acme", "d1"), "diskkey"), deny},
	}
	for _, c := range cases {
		if got, reason := Decide(c.attr); got != c.want {
			t.Errorf("%s: got %v (%s), want %v", c.name, got, reason, c.want)
		}
	}
}
