package v1alpha1

import (
	"encoding/json"
	"testing"

	"k8s.io/apimachinery/pkg/runtime"
)

func TestResourcesAcceptEmptyStringsNumbersAndQuantities(t *testing.T) {
	for in, want := range map[string]Resources{
		`{"cpu":"","memory":"","sockets":""}`:  {},
		`{}`:                                   {},
		`{"cpu":2,"memory":"4Gi","sockets":1}`: {CPU: "2", Memory: "4Gi", Sockets: "1"},
		`{"cpu":"2","memory":null}`:            {CPU: "2"},
	} {
		var r Resources
		if err := json.Unmarshal([]byte(in), &r); err != nil {
			t.Errorf("%s: %v", in, err)
			continue
		}
		if r != want {
			t.Errorf("%s decoded to %+v, want %+v", in, r, want)
		}
	}
	var r Resources
	if err := json.Unmarshal([]byte(`{"cpu":true}`), &r); err == nil {
		t.Errorf("cpu: true decoded to %+v, want an error", r)
	}
}

// TestHikubeEmptyResourcesConvertFromUnstructured is the failure users met: the API server
// converts an applied manifest from unstructured, where resource.Quantity refused "".
func TestHikubeEmptyResourcesConvertFromUnstructured(t *testing.T) {
	u := map[string]interface{}{
		"apiVersion": "apps.cozystack.io/v1alpha1", "kind": "VMInstance",
		"metadata": map[string]interface{}{"name": "vm"},
		"spec": map[string]interface{}{
			"instanceType": "u1.medium",
			"resources":    map[string]interface{}{"cpu": "", "memory": "", "sockets": ""},
		},
	}
	var vm VMInstance
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u, &vm); err != nil {
		t.Fatalf("convert: %v", err)
	}
	if _, sized := vm.Spec.ExplicitSize(); sized {
		t.Errorf("empty resources size the VM: %+v", vm.Spec.Resources)
	}
	u["spec"].(map[string]interface{})["resources"] = map[string]interface{}{"cpu": int64(2), "memory": "3Gi", "sockets": int64(2)}
	vm = VMInstance{}
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u, &vm); err != nil {
		t.Fatalf("convert: %v", err)
	}
	size, sized := vm.Spec.ExplicitSize()
	if want := (Size{CPUs: 4, Sockets: 2, Memory: 3 << 30}); !sized || size != want {
		t.Errorf("size = %+v (%v), want %+v: cpu is cores per socket", size, sized, want)
	}
}

func TestResourcesRefuseUnknownFields(t *testing.T) {
	var r Resources
	if err := json.Unmarshal([]byte(`{"cpu":"1","gpu":"1"}`), &r); err == nil {
		t.Errorf("unknown field decoded to %+v, want an error", r)
	}
}
