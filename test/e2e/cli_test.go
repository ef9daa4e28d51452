package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	kumo "kumo.dev/kumo/pkg/apis/kumo/v1alpha1"
)

func header(out string) []string { return strings.Fields(strings.SplitN(out, "\n", 2)[0]) }

func TestKumoApplyGetDescribeDelete(t *testing.T) {
	c := needCluster(t)
	tenant := uniqueName("cli")
	kc := c.NewTenant(t, tenant)

	out := c.MustKumo(t, kc, "apply", "-f", filepath.Join(repoRoot(), "examples"))
	if !strings.Contains(out, "vminstance.apps.cozystack.io/vm-example serverside-applied") {
		t.Errorf("kumo apply:\n%s", out)
	}
	if got := strings.Join(header(c.MustKumo(t, kc, "get", "vm")), " "); got != "NAME PHASE TYPE NODE DC IP AGE" {
		t.Errorf("kumo get vm header: %q", got)
	}
	if got := strings.Join(header(c.MustKumo(t, kc, "get", "vmd")), " "); got != "NAME PHASE SIZE CLASS PROGRESS AGE" {
		t.Errorf("kumo get vmd header: %q", got)
	}
	wide := c.MustKumo(t, kc, "get", "vm", "-o", "wide")
	if !strings.Contains(wide, "RUNSTRATEGY") || !strings.Contains(wide, "PROFILE") {
		t.Errorf("kumo get vm -o wide:\n%s", wide)
	}
	if js := c.MustKumo(t, kc, "get", "vm", "vm-example", "-o", "json"); !strings.Contains(js, `"instanceType": "u1.medium"`) {
		t.Errorf("kumo get -o json:\n%s", js)
	}
	desc := c.MustKumo(t, kc, "describe", "vm", "vm-example")
	for _, want := range []string{"Name:         vm-example", "Namespace:    " + kumo.TenantNamespace(tenant), "Instance Type:", "Status:", "Phase:", "Events:"} {
		if !strings.Contains(desc, want) {
			t.Errorf("kumo describe vm: missing %q in\n%s", want, desc)
		}
	}
	// Applying from stdin works, and re-applying the same manifest is a no-op.
	manifest, err := os.ReadFile(filepath.Join(repoRoot(), "examples", "vmdisk.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if r := Run(kc, string(manifest), bins.kumo, "apply", "-f", "-"); r.Err != nil || !strings.Contains(r.Stdout, "disk-example serverside-applied") {
		t.Errorf("kumo apply -f -: %s", r)
	}
	out = c.MustKumo(t, kc, "delete", "vm", "vm-example")
	if !strings.Contains(out, `"vm-example" deleted`) {
		t.Errorf("kumo delete:\n%s", out)
	}
}

func TestKumoReportsBadManifestsClearly(t *testing.T) {
	c := needCluster(t)
	kc := c.NewTenant(t, uniqueName("badcli"))
	cases := map[string]struct{ manifest, want string }{
		"malformed YAML": {"apiVersion: apps.cozystack.io/v1alpha1\nkind: VMInstance\nmetadata: [oops\n", "yaml"},
		"unknown kind":   {"apiVersion: apps.cozystack.io/v1alpha1\nkind: VMBanana\nmetadata:\n  name: x\n", `no matches for kind "VMBanana"`},
		"wrong type":     {"apiVersion: apps.cozystack.io/v1alpha1\nkind: VMInstance\nmetadata:\n  name: x\nspec:\n  instanceType: u1.medium\n  externalPorts: \"22\"\n", "externalPorts"},
		"unknown field":  {"apiVersion: apps.cozystack.io/v1alpha1\nkind: VMInstance\nmetadata:\n  name: x\nspec:\n  instanceType: u1.medium\n  colour: blue\n", ".spec.colour: field not declared in schema"},
		"missing field":  {"apiVersion: apps.cozystack.io/v1alpha1\nkind: VMInstance\nmetadata:\n  name: x\nspec:\n  running: true\n", "spec.instanceType: Required value"},
		"bad ssh key":    {"apiVersion: apps.cozystack.io/v1alpha1\nkind: VMInstance\nmetadata:\n  name: x\nspec:\n  instanceType: u1.medium\n  sshKeys: [\"hello\"]\n", "spec.sshKeys[0]"},
		"unknown type":   {"apiVersion: apps.cozystack.io/v1alpha1\nkind: VMInstance\nmetadata:\n  name: x\nspec:\n  instanceType: u7.giant\n", `spec.instanceType: Not found: "u7.giant"`},
		"two sources":    {"apiVersion: apps.cozystack.io/v1alpha1\nkind: VMDisk\nmetadata:\n  name: x\nspec:\n  source:\n    image: {name: a}\n    upload: {}\n", "spec.source"},
	}
	for name, tc := range cases {
		r := Run(kc, tc.manifest, bins.kumo, "apply", "-f", "-")
		if r.Err == nil || !strings.Contains(r.Stderr, tc.want) {
			t.Errorf("%s: want an error containing %q, got %s", name, tc.want, r)
		}
	}
	if out := c.MustKumo(t, kc, "get", "vm,vmd"); strings.Contains(out, " x ") || strings.Contains(out, "\nx ") {
		t.Errorf("a refused manifest was stored:\n%s", out)
	}
}

func TestKumoTenantCreateWritesAPrivateKubeconfig(t *testing.T) {
	c := needCluster(t)
	tenant := uniqueName("kc")
	path := filepath.Join(t.TempDir(), "user.kubeconfig")
	r := c.Kumo(c.AdminKubeconfig(), "tenant", "create", tenant, "--user", "alice", "-o", path)
	if r.Err != nil {
		t.Fatal(r)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("kubeconfig mode %o, want 600", st.Mode().Perm())
	}
	data, _ := os.ReadFile(path)
	if !strings.Contains(string(data), "namespace: "+kumo.TenantNamespace(tenant)) || !strings.Contains(string(data), "alice") {
		t.Errorf("kubeconfig lacks the tenant namespace or user:\n%s", data)
	}
	if out := c.MustKumo(t, path, "get", "vm"); !strings.Contains(out+r.Stderr, "No resources found") && out != "" {
		t.Errorf("new tenant sees VMs:\n%s", out)
	}
	if r := c.Kumo(c.AdminKubeconfig(), "tenant", "create", tenant); r.Err == nil || !strings.Contains(r.Stderr, "already exists") {
		t.Errorf("creating the tenant twice: %s", r)
	}
	// Printing to stdout gives a second, independent kubeconfig.
	if out := c.MustKumo(t, c.AdminKubeconfig(), "tenant", "kubeconfig", tenant); !strings.Contains(out, "token:") {
		t.Errorf("kumo tenant kubeconfig printed:\n%s", out)
	}
}

func TestKumoFindsItsKubeconfigLikeKubectl(t *testing.T) {
	c := needCluster(t)
	home := t.TempDir()
	if err := os.MkdirAll(filepath.Join(home, ".kube"), 0o700); err != nil {
		t.Fatal(err)
	}
	admin, _ := os.ReadFile(c.AdminKubeconfig())
	if err := os.WriteFile(filepath.Join(home, ".kube", "config"), admin, 0o600); err != nil {
		t.Fatal(err)
	}
	tenantKC := c.NewTenant(t, uniqueName("prec"))
	run := func(env []string, args ...string) Result { return runEnv(env, bins.kumo, args...) }
	// ~/.kube/config alone: the admin may list tenants.
	if r := run([]string{"HOME=" + home, "KUBECONFIG="}, "get", "tenants"); r.Err != nil {
		t.Errorf("~/.kube/config not used: %s", r)
	}
	// $KUBECONFIG beats ~/.kube/config: the tenant user may not list tenants.
	if r := run([]string{"HOME=" + home, "KUBECONFIG=" + tenantKC}, "get", "tenants"); r.Err == nil || !strings.Contains(r.Stderr, "Forbidden") {
		t.Errorf("$KUBECONFIG not preferred: %s", r)
	}
	// --kubeconfig beats $KUBECONFIG.
	if r := run([]string{"HOME=" + home, "KUBECONFIG=" + tenantKC}, "--kubeconfig", c.AdminKubeconfig(), "get", "tenants"); r.Err != nil {
		t.Errorf("--kubeconfig not preferred: %s", r)
	}
}

func TestKumoVersionReportsClientAndServer(t *testing.T) {
	c := needCluster(t)
	out := c.MustKumo(t, c.AdminKubeconfig(), "version")
	if !strings.Contains(out, "Client Version: v") || !strings.Contains(out, "Server Version: v") {
		t.Errorf("kumo version:\n%s", out)
	}
}
