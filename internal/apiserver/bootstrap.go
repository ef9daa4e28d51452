package apiserver

import (
	"context"
	"fmt"
	"log/slog"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/rest"

	kumo "kumo.dev/kumo/pkg/apis/kumo/v1alpha1"
	"kumo.dev/kumo/pkg/client"
)

// systemNamespaces exist on every cluster: events about cluster-scoped objects go to "default".
var systemNamespaces = []string{metav1.NamespaceDefault, "kumo-system"}

// bootstrap creates the system namespaces and the built-in instance types and profiles. Objects
// that exist are left as they are, so an admin's edits survive restarts.
func bootstrap(ctx context.Context, loopback *rest.Config) error {
	c, err := client.New(loopback)
	if err != nil {
		return err
	}
	for _, ns := range systemNamespaces {
		_, err := c.Core.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
		if err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("create namespace %s: %w", ns, err)
		}
	}
	var objs []runtime.Object
	for _, t := range kumo.BuiltinInstanceTypes() {
		objs = append(objs, &t)
	}
	for _, p := range kumo.BuiltinInstanceProfiles() {
		objs = append(objs, &p)
	}
	created := 0
	for _, o := range objs {
		resource := "instancetypes"
		if _, ok := o.(*kumo.InstanceProfile); ok {
			resource = "instanceprofiles"
		}
		err := c.Kumo.Post().Resource(resource).Body(o).Do(ctx).Error()
		switch {
		case err == nil:
			created++
		case !apierrors.IsAlreadyExists(err):
			return fmt.Errorf("create built-in %s: %w", resource, err)
		}
	}
	slog.Info("built-in objects in place", "created", created, "total", len(objs))
	return nil
}
