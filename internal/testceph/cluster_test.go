package testceph

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// One cluster for the whole test binary, started by the first test that needs it and stopped by
// TestMain after all tests ran.
var (
	shared     *Cluster
	sharedErr  error
	sharedOnce sync.Once
)

func TestMain(m *testing.M) {
	flag.Parse()
	code := m.Run()
	if err := shared.Stop(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		if code == 0 {
			code = 1
		}
	}
	os.Exit(code)
}

func cluster(t *testing.T) *Cluster {
	t.Helper()
	if testing.Short() {
		t.Skip("starts a real Ceph cluster; skipped with -short")
	}
	sharedOnce.Do(func() {
		root, err := RepoRoot()
		if err != nil {
			sharedErr = err
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		start := time.Now()
		shared, sharedErr = Start(ctx, root)
		t.Logf("cluster up in %v (dir %s)", time.Since(start).Round(100*time.Millisecond), dirOf(shared))
	})
	if sharedErr != nil {
		t.Fatal(sharedErr)
	}
	return shared
}

func dirOf(c *Cluster) string {
	if c == nil {
		return "-"
	}
	return c.Dir
}

// asUser runs rbd as the tenant-facing user client.kumo (not admin).
func asUser(ctx context.Context, c *Cluster, args ...string) (string, error) {
	return run(ctx, "rbd", append([]string{"-c", c.Conf, "--id", c.User, "--keyring", c.Keyring}, args...)...)
}

// timed runs a command and logs how long it took.
func timed(t *testing.T, what string, f func() (string, error)) (string, error) {
	t.Helper()
	start := time.Now()
	out, err := f()
	t.Logf("%s: %v", what, time.Since(start).Round(10*time.Millisecond))
	return out, err
}

// mustOK returns a checker for (output, error) results that fails t on an error:
// must := mustOK(t); out := must(c.RBD(...)).
func mustOK(t *testing.T) func(string, error) string {
	return func(out string, err error) string {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
}

// The whole lifecycle the brief asks for, in order: (a) tenant namespace and image as client.kumo,
// (b) three replicas in three datacenters, (c) QEMU I/O through its rbd driver, (d) LUKS2.
func TestCluster(t *testing.T) {
	c := cluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	// A cluster reused from $KUMO_CEPH_DIR may hold an earlier run's tenant-a.
	ns := "tenant-a"
	if c.reused {
		ns = fmt.Sprintf("tenant-a-%d", time.Now().UnixNano())
	}
	img := func(name string) string { return c.Pool + "/" + ns + "/" + name }

	t.Run("NamespaceAndImageAsTenantUser", func(t *testing.T) {
		must := mustOK(t)
		must(c.RBD(ctx, "namespace", "create", c.Pool+"/"+ns))
		must(timed(t, "rbd create (client.kumo)", func() (string, error) {
			return asUser(ctx, c, "create", img("disk1"), "--size", "64M")
		}))
		ls := must(asUser(ctx, c, "ls", c.Pool+"/"+ns))
		if strings.TrimSpace(ls) != "disk1" {
			t.Fatalf("rbd ls %s/%s = %q, want disk1", c.Pool, ns, ls)
		}
		// cephx is on and client.kumo is confined to its pool.
		if out, err := asUser(ctx, c, "ls", "device_health_metrics"); err == nil {
			t.Errorf("client.kumo could list another pool: %q", out)
		}
		if _, err := run(ctx, "rbd", "-c", c.Conf, "--id", c.User, "--keyring", "/dev/null", "ls", c.Pool); err == nil {
			t.Errorf("rbd without a key succeeded: cephx is not enforced")
		}
	})

	t.Run("ReplicasInThreeDatacenters", func(t *testing.T) {
		must := mustOK(t)
		var info struct{ ID string }
		if err := json.Unmarshal([]byte(must(asUser(ctx, c, "info", img("disk1"), "--format", "json"))), &info); err != nil || info.ID == "" {
			t.Fatalf("rbd info: %v (id %q)", err, info.ID)
		}
		dcOf := datacenters(t, must(c.Ceph(ctx, "osd", "tree", "-f", "json")))
		for _, obj := range []string{"rbd_header." + info.ID, "rbd_data." + info.ID + ".0000000000000000"} {
			var m struct {
				PGID   string
				Acting []int
			}
			out := must(c.Ceph(ctx, "osd", "map", c.Pool, obj, ns, "-f", "json"))
			if err := json.Unmarshal([]byte(out), &m); err != nil {
				t.Fatalf("ceph osd map: %v: %s", err, out)
			}
			var dcs []string
			for _, osd := range m.Acting {
				dcs = append(dcs, dcOf[osd])
			}
			t.Logf("%s: pg %s acting %v in %v", obj, m.PGID, m.Acting, dcs)
			slices.Sort(dcs)
			if len(m.Acting) != 3 || len(slices.Compact(slices.Clone(dcs))) != 3 || slices.Contains(dcs, "") {
				t.Errorf("%s: acting set %v in datacenters %v, want 3 OSDs in 3 datacenters", obj, m.Acting, dcs)
			}
		}
	})

	t.Run("QEMURawIO", func(t *testing.T) {
		must := mustOK(t)
		spec := fmt.Sprintf("rbd:%s:conf=%s:id=%s:keyring=%s", img("disk2"), c.Conf, c.User, c.Keyring)
		must(timed(t, "qemu-img create", func() (string, error) { return run(ctx, "qemu-img", "create", "-f", "raw", spec, "64M") }))
		must(timed(t, "qemu-io write 1M", func() (string, error) {
			return run(ctx, "qemu-io", "-f", "raw", "-c", "write -P 0xab 0 1M", spec)
		}))
		must(timed(t, "qemu-io read 1M", func() (string, error) {
			return run(ctx, "qemu-io", "-f", "raw", "-c", "read -P 0xab 0 1M", spec)
		}))
		// The pattern check is real: another pattern does not verify.
		if out, err := qemuIO(ctx, "-f", "raw", "-c", "read -P 0xcd 0 1M", spec); err == nil {
			t.Errorf("qemu-io verified the wrong pattern: %s", out)
		}
		// And the bytes are in RADOS, as rbd sees them.
		exp := filepath.Join(t.TempDir(), "disk2.raw")
		must(asUser(ctx, c, "export", img("disk2"), exp))
		data, err := os.ReadFile(exp)
		if err != nil {
			t.Fatal(err)
		}
		if len(data) != 64<<20 || !bytes.Equal(data[:1<<20], bytes.Repeat([]byte{0xab}, 1<<20)) || data[1<<20] != 0 {
			t.Errorf("rbd export of disk2: %d bytes, not 1 MiB of 0xab then zeros", len(data))
		}
	})

	t.Run("LUKS2", func(t *testing.T) {
		must := mustOK(t)
		dir := t.TempDir()
		pass, wrong := filepath.Join(dir, "pass"), filepath.Join(dir, "wrong")
		if err := os.WriteFile(pass, []byte("correct horse battery staple"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(wrong, []byte("incorrect horse"), 0o600); err != nil {
			t.Fatal(err)
		}
		must(asUser(ctx, c, "create", img("disk3"), "--size", "64M"))
		must(timed(t, "rbd encryption format luks2", func() (string, error) {
			return asUser(ctx, c, "encryption", "format", img("disk3"), "luks2", pass)
		}))
		opts := fmt.Sprintf("driver=rbd,pool=%s,namespace=%s,image=disk3,conf=%s,user=%s,"+
			"encrypt.format=luks2,encrypt.key-secret=sec0", c.Pool, ns, c.Conf, c.User)
		t.Logf("QEMU options: --object secret,id=sec0,file=PASSFILE --image-opts %s", opts)

		out := must(timed(t, "qemu-img info (luks2 open)", func() (string, error) {
			return run(ctx, "qemu-img", "info", "--output=json", "--object", "secret,id=sec0,file="+pass, "--image-opts", opts)
		}))
		var info struct {
			VirtualSize int64 `json:"virtual-size"`
		}
		if err := json.Unmarshal([]byte(out), &info); err != nil {
			t.Fatalf("qemu-img info: %v: %s", err, out)
		}
		t.Logf("encrypted virtual size %d MiB of 64 MiB", info.VirtualSize>>20)
		if info.VirtualSize <= 0 || info.VirtualSize >= 64<<20 {
			t.Errorf("virtual size %d: want less than 64 MiB (the LUKS2 header takes its share)", info.VirtualSize)
		}
		must(timed(t, "qemu-io write+read 1M (luks2)", func() (string, error) {
			return run(ctx, "qemu-io", "--object", "secret,id=sec0,file="+pass, "--image-opts",
				"-c", "write -P 0xab 0 1M", "-c", "read -P 0xab 0 1M", opts)
		}))
		// Without the encryption layer the same bytes are ciphertext.
		raw := strings.TrimSuffix(opts, ",encrypt.format=luks2,encrypt.key-secret=sec0")
		if out, err := qemuIO(ctx, "--image-opts", "-c", "read -P 0xab 0 1M", raw); err == nil {
			t.Errorf("the raw image reads back the plaintext: %s", out)
		}
		_, err := timed(t, "qemu-img info with a wrong passphrase", func() (string, error) {
			return run(ctx, "qemu-img", "info", "--object", "secret,id=sec0,file="+wrong, "--image-opts", opts)
		})
		if err == nil {
			t.Fatal("a wrong passphrase opened the LUKS2 image")
		}
		t.Logf("wrong passphrase: %v", err)
	})
}

// qemuIO runs qemu-io; a failed pattern check is an error (QEMU 7.2 exits 1 on it, and the
// output is checked too, so that the negative checks cannot pass by accident).
func qemuIO(ctx context.Context, args ...string) (string, error) {
	out, err := run(ctx, "qemu-io", args...)
	if err == nil && strings.Contains(out, "Pattern verification failed") {
		err = fmt.Errorf("qemu-io: %s", strings.TrimSpace(out))
	}
	return out, err
}

// datacenters maps each OSD id to the name of the datacenter bucket above it in `ceph osd tree`.
func datacenters(t *testing.T, treeJSON string) map[int]string {
	t.Helper()
	var tree struct {
		Nodes []struct {
			ID       int
			Name     string
			Type     string
			Children []int
		}
	}
	if err := json.Unmarshal([]byte(treeJSON), &tree); err != nil {
		t.Fatalf("ceph osd tree: %v", err)
	}
	parent := map[int]int{}
	byID := map[int]int{}
	for i, n := range tree.Nodes {
		byID[n.ID] = i
		for _, ch := range n.Children {
			parent[ch] = n.ID
		}
	}
	dc := map[int]string{}
	for _, n := range tree.Nodes {
		if n.Type != "osd" {
			continue
		}
		for id, ok := parent[n.ID]; ok; id, ok = parent[id] {
			if p := tree.Nodes[byID[id]]; p.Type == "datacenter" {
				dc[n.ID] = p.Name
				break
			}
		}
	}
	return dc
}
