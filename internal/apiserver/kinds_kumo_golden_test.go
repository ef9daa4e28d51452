package apiserver

import (
	"context"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	apps "kumo.dev/kumo/pkg/apis/apps/v1alpha1"
	kumo "kumo.dev/kumo/pkg/apis/kumo/v1alpha1"
)

func TestGoldenImageURLWithCredentialsIsRefused(t *testing.T) {
	k := goldenImageKind()
	g := &kumo.GoldenImage{ObjectMeta: metav1.ObjectMeta{Name: "os"},
		Spec: kumo.GoldenImageSpec{Source: kumo.GoldenImageSource{HTTP: &kumo.GoldenImageHTTP{URL: "https://admin:hunter2@mirror.example/os.qcow2"}}}}
	errs := k.Validate(context.Background(), g)
	if len(errs) != 1 || errs[0].Field != "spec.source.http.url" || strings.Contains(errs.ToAggregate().Error(), "hunter2") {
		t.Fatalf("golden image URL with credentials: %v", errs)
	}
	g.Spec.Source.HTTP.URL = "https://mirror.example/os.qcow2"
	if errs := k.Validate(context.Background(), g); len(errs) != 0 {
		t.Fatalf("plain URL: %v", errs)
	}
}

func TestSourceSummaryHidesCredentialsOfOldObjects(t *testing.T) {
	got := sourceSummary(apps.VMDiskSource{HTTP: &apps.HTTPSource{URL: "https://user:hunter2@mirror.example/os.qcow2"}})
	if strings.Contains(got, "hunter2") || !strings.Contains(got, "mirror.example/os.qcow2") {
		t.Fatalf("summary %q", got)
	}
}
