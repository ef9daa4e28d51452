package apiserver

import (
	"testing"

	"k8s.io/apimachinery/pkg/api/resource"

	kumo "kumo.dev/kumo/pkg/apis/kumo/v1alpha1"
)

func TestNodeTableShowsMemoryInGi(t *testing.T) {
	n := &kumo.Node{Status: kumo.NodeStatus{Allocatable: map[string]resource.Quantity{"memory": resource.MustParse("24159260Ki")}}}
	if got := nodeMemory(n); got != "23.0Gi" {
		t.Errorf("memory column = %q, want 23.0Gi", got)
	}
	if got := nodeMemory(&kumo.Node{}); got != "<none>" {
		t.Errorf("memory column of an unreported node = %q", got)
	}
}
