package agent

import (
	"strings"
	"testing"

	apps "kumo.dev/kumo/pkg/apis/apps/v1alpha1"
)

func TestDiskEventsNeverShowURLCredentials(t *testing.T) {
	d := &apps.VMDisk{Spec: apps.VMDiskSpec{Source: apps.VMDiskSource{HTTP: &apps.HTTPSource{URL: "https://user:hunter2@mirror.example/os.qcow2"}}}}
	if got := describeSource(d); strings.Contains(got, "hunter2") || !strings.Contains(got, "mirror.example/os.qcow2") {
		t.Fatalf("event source %q", got)
	}
}
