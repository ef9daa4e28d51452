package v1alpha1

import (
	"bytes"
	"encoding/json"
	"fmt"

	"k8s.io/kube-openapi/pkg/common"
	"k8s.io/kube-openapi/pkg/validation/spec"
)

// DiskBus is the controller a disk is attached to.
type DiskBus string

const (
	// BusVirtio is virtio-blk.
	BusVirtio DiskBus = "virtio"
	// BusSATA is the q35 machine's AHCI controller (guests without virtio drivers).
	BusSATA DiskBus = "sata"
	// BusSCSI is a virtio-scsi controller.
	BusSCSI DiskBus = "scsi"
)

// VMDiskRef names a VMDisk attached to a VM. Hikube's documents write it two ways, "- name: x"
// (quick start) and "- x" (API reference); both decode to the same value and it is always
// written back as an object.
type VMDiskRef struct {
	// Name of the VMDisk in the VM's namespace.
	Name string `json:"name"`
	// Bus is virtio, sata or scsi; empty takes the instance profile's disk bus.
	// +optional
	Bus DiskBus `json:"bus,omitempty"`
}

// UnmarshalJSON accepts a bare string or an object with exactly the field name.
func (r *VMDiskRef) UnmarshalJSON(data []byte) error {
	data = bytes.TrimSpace(data)
	if len(data) > 0 && data[0] == '"' {
		return json.Unmarshal(data, &r.Name)
	}
	if bytes.Equal(data, []byte("null")) {
		*r = VMDiskRef{}
		return nil
	}
	var obj struct {
		Name string  `json:"name"`
		Bus  DiskBus `json:"bus"`
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&obj); err != nil {
		return fmt.Errorf("a disk is a name or an object {name: NAME, bus: BUS}: %w", err)
	}
	r.Name, r.Bus = obj.Name, obj.Bus
	return nil
}

// OpenAPIDefinition describes a disk reference without a type, so that server-side apply's
// schema accepts both shapes (a string, or an object with a name); the server then normalises it.
func (VMDiskRef) OpenAPIDefinition() common.OpenAPIDefinition {
	return common.OpenAPIDefinition{
		Schema: spec.Schema{
			SchemaProps: spec.SchemaProps{
				Description: "A VMDisk attached to the VM: either the disk's name, or an object {name: NAME, bus: BUS}.",
				Properties: map[string]spec.Schema{
					"name": {SchemaProps: spec.SchemaProps{
						Description: "Name of the VMDisk in the VM's namespace.",
						Type:        []string{"string"},
					}},
					"bus": {SchemaProps: spec.SchemaProps{
						Description: "Bus is virtio, sata or scsi; empty takes the instance profile's disk bus.",
						Type:        []string{"string"},
					}},
				},
			},
		},
	}
}
