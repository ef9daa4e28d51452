package apiserver

import (
	corev1 "k8s.io/api/core/v1"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"

	"kumo.dev/kumo/pkg/client"
)

// Scheme and Codecs are the shared scheme of every served kind.
var (
	Scheme = client.Scheme
	Codecs = client.Codecs
)

func init() {
	utilruntime.Must(Scheme.AddFieldLabelConversionFunc(corev1.SchemeGroupVersion.WithKind("Event"), eventFieldLabel))
	utilruntime.Must(Scheme.AddFieldLabelConversionFunc(corev1.SchemeGroupVersion.WithKind("Namespace"), namespaceFieldLabel))
}
