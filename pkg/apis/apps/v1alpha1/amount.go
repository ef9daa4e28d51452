package v1alpha1

import (
	"bytes"
	"encoding/json"
	"fmt"

	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/kube-openapi/pkg/common"
	"k8s.io/kube-openapi/pkg/validation/spec"
)

// Amount is a quantity that may be left empty. Hikube's examples write resources as
// {cpu: "", memory: ""}; resource.Quantity refuses "" when a manifest is decoded, so the text is
// kept as given (a JSON number is kept as its digits) and parsed by validation, which names the
// field when it is not a quantity.
type Amount string

// IsSet says whether a value was given.
func (a Amount) IsSet() bool { return a != "" }

// Quantity parses the amount; an unset amount is an error.
func (a Amount) Quantity() (resource.Quantity, error) {
	if a == "" {
		return resource.Quantity{}, fmt.Errorf("no value")
	}
	return resource.ParseQuantity(string(a))
}

// UnmarshalJSON accepts a string, a number or null.
func (a *Amount) UnmarshalJSON(data []byte) error {
	data = bytes.TrimSpace(data)
	switch {
	case bytes.Equal(data, []byte("null")):
		*a = ""
		return nil
	case len(data) > 0 && data[0] == '"':
		var s string
		if err := json.Unmarshal(data, &s); err != nil {
			return err
		}
		*a = Amount(s)
		return nil
	}
	var n json.Number
	if err := json.Unmarshal(data, &n); err != nil {
		return fmt.Errorf("an amount is a number or a string such as \"4Gi\": %w", err)
	}
	*a = Amount(n.String())
	return nil
}

// UnmarshalJSON decodes the resources block strictly (unknown fields are refused). It exists
// because the API server converts applied manifests from unstructured objects, and that
// conversion honours a struct's JSON unmarshaler but not a string type's: without it `cpu: 2`
// would not convert.
func (r *Resources) UnmarshalJSON(data []byte) error {
	type plain Resources
	var p plain
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&p); err != nil {
		return fmt.Errorf("resources is {cpu, memory, sockets}: %w", err)
	}
	*r = Resources(p)
	return nil
}

// OpenAPIDefinition describes the resources block by hand: its amounts are int-or-strings (like
// intstr.IntOrString), so server-side apply and kubectl accept `cpu: 2`, `cpu: "2"` and `cpu: ""`.
// openapi-gen would describe a string type as a plain string, which server-side apply enforces.
func (Resources) OpenAPIDefinition() common.OpenAPIDefinition {
	amount := func(desc string) spec.Schema {
		return spec.Schema{
			SchemaProps:      spec.SchemaProps{Description: desc, Type: []string{"string"}, Format: "int-or-string"},
			VendorExtensible: spec.VendorExtensible{Extensions: spec.Extensions{"x-kubernetes-int-or-string": true}},
		}
	}
	return common.OpenAPIDefinition{
		Schema: spec.Schema{
			SchemaProps: spec.SchemaProps{
				Description: "Resources sizes a VM directly. Each amount may be written as a number or a string; an empty string means unset.",
				Type:        []string{"object"},
				Properties: map[string]spec.Schema{
					"cpu":     amount("CPU is the number of cores per socket (a whole number); the VM has cpu x sockets vCPUs."),
					"memory":  amount("Memory is the guest's memory, e.g. 4Gi (whole MiB)."),
					"sockets": amount("Sockets is the number of CPU sockets (a whole number, default 1)."),
				},
			},
		},
	}
}
