package apiserver

import (
	"context"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	genericapirequest "k8s.io/apiserver/pkg/endpoints/request"
)

func TestNamespaceMarkedTerminatingWaitsForCreatesInFlight(t *testing.T) {
	g := &namespaceGate{}
	ctx := genericapirequest.WithNamespace(context.Background(), "tenant-a")
	finish := g.enter(ctx)
	drained := make(chan struct{})
	go func() {
		g.afterNamespaceUpdate(&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "tenant-a"}, Status: corev1.NamespaceStatus{Phase: corev1.NamespaceTerminating}}, nil)
		close(drained)
	}()
	select {
	case <-drained:
		t.Fatal("the terminating mark returned while a create admitted before it was still being written")
	case <-time.After(200 * time.Millisecond):
	}
	finish()
	select {
	case <-drained:
	case <-time.After(10 * time.Second):
		t.Fatal("the terminating mark still waits after the create finished")
	}
	// An update that leaves the namespace live does not wait for anything.
	defer g.enter(ctx)()
	g.afterNamespaceUpdate(&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "tenant-a"}, Status: corev1.NamespaceStatus{Phase: corev1.NamespaceActive}}, nil)
}
