// Package controller holds the server's reconcilers, one sub-package per concern. Each watches
// the API through informers, queues keys, and moves the world one step toward the spec per pass,
// recording why in status conditions and events.
package controller
