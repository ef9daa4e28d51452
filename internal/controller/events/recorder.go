// Package events gives controllers a Kubernetes event recorder writing to Kumo's core events.
package events

import (
	"context"

	corev1 "k8s.io/api/core/v1"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/record"

	"kumo.dev/kumo/pkg/client"
)

// NewRecorder returns a recorder for component; it stops when ctx ends.
func NewRecorder(ctx context.Context, c *client.Client, component string) record.EventRecorder {
	b := record.NewBroadcaster(record.WithContext(ctx))
	b.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: c.Core.CoreV1().Events("")})
	go func() { <-ctx.Done(); b.Shutdown() }()
	return b.NewRecorder(client.Scheme, corev1.EventSource{Component: component})
}
