package apiserver

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apimachineryvalidation "k8s.io/apimachinery/pkg/api/validation"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/apiserver/pkg/registry/generic"

	"kumo.dev/kumo/internal/apiserver/registry"
)

// eventTTL is how long events are kept, as in Kubernetes.
const eventTTLSeconds = 3600

func coreResource(r string) schema.GroupResource { return schema.GroupResource{Resource: r} }

// namespaceKind stores namespaces. Kumo's namespaces are tenants' (tenant-<name>, created and
// deleted by the tenant controller) plus "default" and "kumo-system".
func namespaceKind() *registry.Kind {
	ns := func(o runtime.Object) *corev1.Namespace { return o.(*corev1.Namespace) }
	validate := func(_ context.Context, o runtime.Object) field.ErrorList {
		return apimachineryvalidation.ValidateObjectMeta(&ns(o).ObjectMeta, false, apimachineryvalidation.ValidateNamespaceName, field.NewPath("metadata"))
	}
	return &registry.Kind{
		Resource: coreResource("namespaces"), Singular: "namespace", ShortNames: []string{"ns"},
		HasStatus: true, Version: "v1",
		New:     func() runtime.Object { return &corev1.Namespace{} },
		NewList: func() runtime.Object { return &corev1.NamespaceList{} },
		PrepareForCreate: func(o runtime.Object) {
			ns(o).Status.Phase = corev1.NamespaceActive
		},
		Validate: validate,
		ValidateUpdate: func(ctx context.Context, o, old runtime.Object) field.ErrorList {
			errs := apimachineryvalidation.ValidateObjectMetaUpdate(&ns(o).ObjectMeta, &ns(old).ObjectMeta, field.NewPath("metadata"))
			return append(errs, validate(ctx, o)...)
		},
		AttrFunc: func(o runtime.Object) (labels.Set, fields.Set, error) {
			n := ns(o)
			return n.Labels, fields.Set{"metadata.name": n.Name, "status.phase": string(n.Status.Phase)}, nil
		},
		Table: registry.Table{
			{Name: "Status", Type: "string", Value: func(o runtime.Object) interface{} { return string(ns(o).Status.Phase) }},
		},
	}
}

func namespaceFieldLabel(label, value string) (string, string, error) {
	switch label {
	case "metadata.name", "status.phase":
		return label, value, nil
	}
	return "", "", fmt.Errorf("field label not supported: %s", label)
}

// eventKind stores core/v1 events, which kubectl describe and kumo describe show.
func eventKind() *registry.Kind {
	ev := func(o runtime.Object) *corev1.Event { return o.(*corev1.Event) }
	validate := func(_ context.Context, o runtime.Object) field.ErrorList {
		e := ev(o)
		errs := apimachineryvalidation.ValidateObjectMeta(&e.ObjectMeta, true, apimachineryvalidation.NameIsDNSSubdomain, field.NewPath("metadata"))
		if e.InvolvedObject.Namespace != "" && e.InvolvedObject.Namespace != e.Namespace {
			errs = append(errs, field.Invalid(field.NewPath("involvedObject", "namespace"), e.InvolvedObject.Namespace, "must match the event's namespace"))
		}
		return errs
	}
	return &registry.Kind{
		Resource: coreResource("events"), Singular: "event", ShortNames: []string{"ev"}, Namespaced: true, Version: "v1",
		New:      func() runtime.Object { return &corev1.Event{} },
		NewList:  func() runtime.Object { return &corev1.EventList{} },
		Validate: validate,
		ValidateUpdate: func(ctx context.Context, o, old runtime.Object) field.ErrorList {
			return append(apimachineryvalidation.ValidateObjectMetaUpdate(&ev(o).ObjectMeta, &ev(old).ObjectMeta, field.NewPath("metadata")), validate(ctx, o)...)
		},
		AttrFunc: func(o runtime.Object) (labels.Set, fields.Set, error) {
			e := ev(o)
			return e.Labels, eventFields(e), nil
		},
		TTL: func(runtime.Object, uint64, bool) (uint64, error) { return eventTTLSeconds, nil },
		Table: registry.Table{
			{Name: "Type", Type: "string", Value: func(o runtime.Object) interface{} { return ev(o).Type }},
			{Name: "Reason", Type: "string", Value: func(o runtime.Object) interface{} { return ev(o).Reason }},
			{Name: "Object", Type: "string", Value: func(o runtime.Object) interface{} {
				return fmt.Sprintf("%s/%s", ev(o).InvolvedObject.Kind, ev(o).InvolvedObject.Name)
			}},
			{Name: "Message", Type: "string", Value: func(o runtime.Object) interface{} { return ev(o).Message }},
		},
	}
}

func eventFields(e *corev1.Event) fields.Set {
	f := generic.ObjectMetaFieldsSet(&e.ObjectMeta, true)
	extra := fields.Set{
		"involvedObject.kind":            e.InvolvedObject.Kind,
		"involvedObject.namespace":       e.InvolvedObject.Namespace,
		"involvedObject.name":            e.InvolvedObject.Name,
		"involvedObject.uid":             string(e.InvolvedObject.UID),
		"involvedObject.apiVersion":      e.InvolvedObject.APIVersion,
		"involvedObject.resourceVersion": e.InvolvedObject.ResourceVersion,
		"involvedObject.fieldPath":       e.InvolvedObject.FieldPath,
		"reason":                         e.Reason,
		"reportingComponent":             e.ReportingController,
		"source":                         e.Source.Component,
		"type":                           e.Type,
	}
	return generic.MergeFieldsSets(f, extra)
}

func eventFieldLabel(label, value string) (string, string, error) {
	if _, ok := eventFields(&corev1.Event{})[label]; ok {
		return label, value, nil
	}
	return "", "", fmt.Errorf("field label not supported: %s", label)
}
