package e2e

import (
	"bufio"
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	kumo "kumo.dev/kumo/pkg/apis/kumo/v1alpha1"
)

// TestKubectlDrivesKumoLikeKubernetes runs a real kubectl (built from k8s.io/kubectl at our
// libraries' minor version) through the Hikube quick start: apply, get, get -o yaml, explain,
// describe, watch, delete, and a forbidden cross-tenant get.
func TestKubectlDrivesKumoLikeKubernetes(t *testing.T) {
	c := needCluster(t)
	tenant, other := uniqueName("kctl"), uniqueName("kother")
	kc, otherKC := c.NewTenant(t, tenant), c.NewTenant(t, other)
	ns := kumo.TenantNamespace(tenant)
	examples := filepath.Join(repoRoot(), "examples")

	out := c.MustKubectl(t, kc, "apply", "-f", examples)
	for _, want := range []string{"vmdisk.apps.cozystack.io/disk-example created", "vminstance.apps.cozystack.io/vm-example created"} {
		if !strings.Contains(out, want) {
			t.Errorf("kubectl apply: missing %q in\n%s", want, out)
		}
	}
	out = c.MustKubectl(t, kc, "apply", "--server-side", "--force-conflicts", "-f", examples)
	if !strings.Contains(out, "serverside-applied") {
		t.Errorf("kubectl apply --server-side:\n%s", out)
	}

	out = c.MustKubectl(t, kc, "get", "vm")
	if !strings.HasPrefix(out, "NAME") || !strings.Contains(out, "vm-example") || !strings.Contains(out, "u1.medium") {
		t.Errorf("kubectl get vm:\n%s", out)
	}
	for _, col := range []string{"PHASE", "TYPE", "NODE", "DC", "IP", "AGE"} {
		if !strings.Contains(strings.SplitN(out, "\n", 2)[0], col) {
			t.Errorf("kubectl get vm: header lacks %s:\n%s", col, out)
		}
	}
	out = c.MustKubectl(t, kc, "get", "vmd", "disk-example")
	if !strings.Contains(out, "local") || !strings.Contains(out, "1Gi") {
		t.Errorf("kubectl get vmd:\n%s", out)
	}
	out = c.MustKubectl(t, kc, "get", "vminstance", "vm-example", "-o", "yaml")
	for _, want := range []string{"apiVersion: apps.cozystack.io/v1alpha1", "kind: VMInstance", "instanceType: u1.medium", "- name: disk-example", "runStrategy: Always", "phase: Pending"} {
		if !strings.Contains(out, want) {
			t.Errorf("kubectl get -o yaml: missing %q in\n%s", want, out)
		}
	}
	out = c.MustKubectl(t, kc, "explain", "vminstance.spec")
	for _, want := range []string{"instanceType", "externalPorts", "runStrategy", "cloudInitSeed"} {
		if !strings.Contains(out, want) {
			t.Errorf("kubectl explain vminstance.spec: missing %q in\n%s", want, out)
		}
	}
	out = c.MustKubectl(t, kc, "describe", "vm", "vm-example")
	if !strings.Contains(out, "Instance Type:") || !strings.Contains(out, "Events:") {
		t.Errorf("kubectl describe vm:\n%s", out)
	}

	// Both shapes of disks Hikube's documents use apply through kubectl's server-side apply (other
	// disks than vm-example's: a disk belongs to one VM).
	stringDisks := "apiVersion: apps.cozystack.io/v1alpha1\nkind: VMInstance\nmetadata:\n  name: vm-strings\nspec:\n  instanceType: s1.small\n  disks:\n  - disk-strings\n  - name: data\n"
	r := Run(kc, stringDisks, bins.kubectl, "apply", "--server-side", "-f", "-")
	if r.Err != nil {
		t.Fatalf("kubectl apply --server-side with disks as strings: %s", r)
	}
	out = c.MustKubectl(t, kc, "get", "vm", "vm-strings", "-o", "jsonpath={.spec.disks}")
	if out != `[{"name":"disk-strings"},{"name":"data"}]` {
		t.Errorf("disks stored as %s", out)
	}

	// A watch sees a VM created by someone else.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	watch := exec.CommandContext(ctx, bins.kubectl, "get", "vm", "-w", "--output-watch-events")
	watch.Env = append(os.Environ(), "KUBECONFIG="+kc)
	stdout, err := watch.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := watch.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = watch.Process.Kill(); _ = watch.Wait() }()
	lines := make(chan string, 100)
	go func() {
		s := bufio.NewScanner(stdout)
		for s.Scan() {
			lines <- s.Text()
		}
		close(lines)
	}()
	waitLine(t, lines, "vm-example") // the initial listing
	c.MustKumo(t, kc, "apply", "-f", writeTemp(t, "apiVersion: apps.cozystack.io/v1alpha1\nkind: VMInstance\nmetadata:\n  name: vm-watched\nspec:\n  instanceType: u1.large\n"))
	if line := waitLine(t, lines, "vm-watched"); !strings.Contains(line, "ADDED") {
		t.Errorf("watch line for the new VM: %q", line)
	}

	// Another tenant is refused with Kubernetes' standard Forbidden sentence.
	r = c.Kubectl(otherKC, "get", "vm", "vm-example", "-n", ns)
	if r.Err == nil || !strings.Contains(r.Stderr, "Forbidden") || !strings.Contains(r.Stderr, `cannot get resource "vminstances" in API group "apps.cozystack.io" in the namespace "`+ns+`"`) {
		t.Errorf("cross-tenant kubectl get: %s", r)
	}

	// The VM first: a disk a VM names cannot be deleted (409).
	out = c.MustKubectl(t, kc, "delete", "-f", filepath.Join(examples, "vminstance.yaml"), "-f", filepath.Join(examples, "vmdisk.yaml"))
	if !strings.Contains(out, `vminstance.apps.cozystack.io "vm-example" deleted`) {
		t.Errorf("kubectl delete:\n%s", out)
	}
	if r := c.Kubectl(kc, "get", "vm", "vm-example"); r.Err == nil || !strings.Contains(r.Stderr, "NotFound") {
		t.Errorf("VM still there after delete: %s", r)
	}
	out = c.MustKubectl(t, c.AdminKubeconfig(), "get", "vm", "-A")
	if !strings.Contains(out, ns) || !strings.Contains(out, "vm-strings") {
		t.Errorf("admin kubectl get vm -A:\n%s", out)
	}
}

func waitLine(t *testing.T, lines <-chan string, substr string) string {
	t.Helper()
	timeout := time.After(20 * time.Second)
	for {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("output ended before a line with %q", substr)
			}
			if strings.Contains(l, substr) {
				return l
			}
		case <-timeout:
			t.Fatalf("no line with %q within 20s", substr)
		}
	}
}

func writeTemp(t *testing.T, content string) string {
	t.Helper()
	f, err := os.CreateTemp(t.TempDir(), "*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(f, content); err != nil {
		t.Fatal(err)
	}
	f.Close()
	return f.Name()
}
