package qemu

import (
	"context"
	"fmt"
)

// BlockResize sets the size of a block node (QMP block_resize) as the guest sees it.
func (m *Monitor) BlockResize(ctx context.Context, node string, size int64) error {
	args := struct {
		NodeName string `json:"node-name"`
		Size     int64  `json:"size"`
	}{node, size}
	if err := m.Execute(ctx, "block_resize", args, nil); err != nil {
		return fmt.Errorf("resize block node %s to %d bytes: %w", node, size, err)
	}
	return nil
}

// BlockNodeSizes returns the virtual size of every named block node (QMP
// query-named-block-nodes, flat), by node name.
func (m *Monitor) BlockNodeSizes(ctx context.Context) (map[string]int64, error) {
	var nodes []struct {
		NodeName string `json:"node-name"`
		Image    struct {
			VirtualSize int64 `json:"virtual-size"`
		} `json:"image"`
	}
	if err := m.Execute(ctx, "query-named-block-nodes", map[string]any{"flat": true}, &nodes); err != nil {
		return nil, fmt.Errorf("list block nodes: %w", err)
	}
	sizes := make(map[string]int64, len(nodes))
	for _, n := range nodes {
		sizes[n.NodeName] = n.Image.VirtualSize
	}
	return sizes, nil
}

// DiskNode is the QEMU block node of the disk with the given ID, the node the guest's device
// reads through (the format node above the file or RBD node).
func DiskNode(id string) string { return "drive-" + id }

// DiskByName finds the disk of cfg that was configured for the named volume (Disk.Name).
func (c *Config) DiskByName(name string) (Disk, bool) {
	for _, d := range c.Disks {
		if d.Name != "" && d.Name == name {
			return d, true
		}
	}
	return Disk{}, false
}

// GrowDisk grows the disk with the given ID of a running VM online to want bytes as the guest
// sees them (the guest is told at once). Some block layers (Ceph 16.2's LUKS2) take the
// requested size as the raw size, header included, so the size the node reports afterwards is
// checked and the shortfall added once. The size is never lowered.
func (v *VM) GrowDisk(ctx context.Context, id string, want int64) error {
	node := DiskNode(id)
	size := want
	for attempt := 0; attempt < 2; attempt++ {
		if err := v.mon.BlockResize(ctx, node, size); err != nil {
			return fmt.Errorf("grow disk %s of VM %s: %w", id, v.paths.Name, err)
		}
		sizes, err := v.mon.BlockNodeSizes(ctx)
		if err != nil {
			return fmt.Errorf("grow disk %s of VM %s: %w", id, v.paths.Name, err)
		}
		got, ok := sizes[node]
		if !ok {
			return fmt.Errorf("grow disk %s of VM %s: block node %s not found after resizing", id, v.paths.Name, node)
		}
		if got >= want {
			return nil
		}
		size += want - got
	}
	return fmt.Errorf("grow disk %s of VM %s: block node %s stays smaller than %d bytes after resizing", id, v.paths.Name, node, want)
}
