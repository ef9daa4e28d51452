package v1alpha1

// ResourceLocalStorage names, in a Node's status.capacity and status.allocatable, the bytes of
// the filesystem holding the node's local disks: capacity is its size, allocatable what local
// disks may take together (the scheduler counts each placed local disk's spec.storage).
const ResourceLocalStorage = "local-storage"
