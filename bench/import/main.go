// Command import measures disk imports against plain qemu-img in the same run.
//
// It makes a fully allocated qcow2 image of --size (random data: nothing to skip), serves it on
// loopback HTTP, and for each storage class times (a) a plain `qemu-img convert` of that file to
// the class's target (a qcow2 file; a raw RBD image), (b) the same conversion into an encrypted
// target made beforehand (what Kumo's disks are), and (c) Kumo importing it over HTTP: from the
// VMInstance create to its VMDisk (source.http, encrypted with the tenant's key) being Ready.
// Last, it times opening an encrypted disk of each class (the key derivation each VM start pays).
// Then it times disks made from golden images on replicated storage, one tenant, --clones each
// from a small image (the tiny guest) and from the big one: the first pays for the tenant's
// encrypted copy, later ones are clones and should cost the same whatever the image's size.
//
// The replicated class runs on a real Ceph cluster: --ceph-conf/--ceph-user/--ceph-pool, or by
// default a throwaway one from hack/ceph/up.sh (installs Ceph if needed; OSDs of 8G sparse files).
//
//	go run ./bench/import                  # 1Gi image, 2 rounds, 4 clones per image
//	go run ./bench/import --size 256Mi     # quick run
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"syscall"
	"time"

	"k8s.io/apimachinery/pkg/api/resource"

	"kumo.dev/kumo/bench/internal/kumoserver"
	"kumo.dev/kumo/internal/testceph"
	kumov1 "kumo.dev/kumo/pkg/apis/kumo/v1alpha1"
	"kumo.dev/kumo/pkg/client"
)

type options struct {
	size           resource.Quantity
	sizeFlag       string
	rounds, clones int
	cephConf       string
	cephUser, pool string
	kumod, kumo    string
	tinyImage      string
	keep           bool
	importGoal     float64
}

func main() {
	var o options
	flag.StringVar(&o.sizeFlag, "size", "1Gi", "virtual size of the imported image (all of it written)")
	flag.IntVar(&o.rounds, "rounds", 2, "imports per class (each paired with a plain conversion)")
	flag.IntVar(&o.clones, "clones", 4, "disks made from each golden image on replicated storage")
	flag.StringVar(&o.cephConf, "ceph-conf", "", "ceph.conf of an existing cluster (default: start a throwaway one)")
	flag.StringVar(&o.cephUser, "ceph-user", "kumo", "cephx user with the rbd profile on --ceph-pool")
	flag.StringVar(&o.pool, "ceph-pool", "kumo", "RBD pool")
	flag.StringVar(&o.kumod, "kumod", "", "kumod binary (default: build ./cmd/kumod)")
	flag.StringVar(&o.kumo, "kumo", "", "kumo binary (default: build ./cmd/kumo)")
	flag.StringVar(&o.tinyImage, "tiny-image", "", "small golden image (default: _output/images/kumo-tiny.qcow2)")
	flag.BoolVar(&o.keep, "keep", false, "keep the temp dir")
	flag.Parse()
	q, err := resource.ParseQuantity(o.sizeFlag)
	if err != nil || q.Value() < 1<<20 || o.rounds < 1 || o.clones < 2 {
		fmt.Fprintln(os.Stderr, "bench/import: --size must be at least 1Mi, --rounds at least 1, --clones at least 2")
		os.Exit(2)
	}
	o.size, o.importGoal = q, 1.15
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, o); err != nil {
		fmt.Fprintln(os.Stderr, "bench/import:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, o options) (err error) {
	tmp, err := os.MkdirTemp("", "kumo-bench-import-")
	if err != nil {
		return err
	}
	defer func() {
		exec.Command("pkill", "-KILL", "-f", "qemu-system.*"+tmp).Run()
		if o.keep {
			slog.Info("kept temp dir", "dir", tmp)
		} else {
			os.RemoveAll(tmp)
		}
	}()
	root, err := kumoserver.ModuleRoot(ctx)
	if err != nil && (o.kumod == "" || o.kumo == "" || o.tinyImage == "" || o.cephConf == "") {
		return fmt.Errorf("%w or pass --kumod, --kumo, --tiny-image and --ceph-conf", err)
	}
	if o.kumod == "" || o.kumo == "" {
		bins, err := kumoserver.Build(ctx, filepath.Join(tmp, "bin"), "./cmd/kumod", "./cmd/kumo")
		if err != nil {
			return err
		}
		o.kumod, o.kumo = bins["kumod"], bins["kumo"]
	}
	if o.tinyImage == "" {
		o.tinyImage = filepath.Join(root, "_output", "images", "kumo-tiny.qcow2")
	}
	if o.cephConf == "" {
		os.Setenv("CEPH_OSD_SIZE", "8G") // two full copies of the image, three replicas each
		cluster, err := testceph.Start(ctx, root)
		if err != nil {
			return fmt.Errorf("start a Ceph cluster: %w", err)
		}
		defer cluster.Stop()
		o.cephConf, o.cephUser, o.pool = cluster.Conf, cluster.User, cluster.Pool
	}

	imagesDir := filepath.Join(tmp, "images")
	src, err := makeImage(ctx, imagesDir, o.size.Value())
	if err != nil {
		return err
	}
	if err := os.Link(o.tinyImage, filepath.Join(imagesDir, "small.qcow2")); err != nil {
		if err := kumoserver.CopyFile(o.tinyImage, filepath.Join(imagesDir, "small.qcow2")); err != nil {
			return fmt.Errorf("small golden image: %w", err)
		}
	}
	srvURL, stopHTTP, err := serve(filepath.Dir(src))
	if err != nil {
		return err
	}
	defer stopHTTP()

	srv, err := kumoserver.Start(o.kumod, filepath.Join(tmp, "data"), filepath.Join(tmp, "kumod.log"),
		"--accel", "tcg", "--import-allowed-networks", "127.0.0.1/32", // the image server is on loopback
		"--images-dir", imagesDir, "--node", "aio", "--datacenter", "dc1", "--cpus", "64", "--memory", "256Gi",
		"--ceph-conf", o.cephConf, "--ceph-user", o.cephUser, "--ceph-pool", o.pool)
	if err != nil {
		return err
	}
	defer func() {
		if serr := srv.Stop(); serr != nil && err == nil {
			err = serr
		}
	}()
	if _, err := srv.WaitReady(ctx); err != nil {
		return err
	}
	cfg, err := kumoserver.CreateTenant(ctx, o.kumo, srv.Kubeconfig(), "bench", tmp)
	if err != nil {
		return srv.Annotate(err)
	}
	c, err := client.New(cfg)
	if err != nil {
		return err
	}
	k := &kumoDisks{c: c, ns: kumov1.TenantNamespace("bench")}
	plain := &plainConvert{src: src, dir: tmp, cephConf: o.cephConf, cephUser: o.cephUser, pool: o.pool}

	var imports []importSample
	for _, class := range []string{"local", "replicated"} {
		for r := 0; r < o.rounds; r++ {
			// Each measurement leaves the OSDs (and the page cache) busy for a while after it
			// returns: alternate the order so that neither side always runs in the other's wake.
			var base, baseEnc, took time.Duration
			steps := []func() error{
				func() (err error) { base, err = plain.run(ctx, class, false); return err },
				func() (err error) { baseEnc, err = plain.run(ctx, class, true); return err },
				func() (err error) {
					took, err = k.create(ctx, fmt.Sprintf("imp-%s-%d", class, r), class, srvURL+"/"+filepath.Base(src), "")
					return srv.Annotate(err)
				},
			}
			if r%2 == 1 {
				slices.Reverse(steps)
			}
			for _, step := range steps {
				if err := step(); err != nil {
					return err
				}
			}
			slog.Info("import", "class", class, "round", r, "plain", base, "plainEncrypted", baseEnc, "kumo", took)
			imports = append(imports, importSample{class: class, plain: base, plainEnc: baseEnc, kumo: took})
		}
	}
	clones := map[string][]float64{}
	for _, image := range []string{"small", "big"} {
		for i := 0; i < o.clones; i++ {
			took, err := k.create(ctx, fmt.Sprintf("from-%s-%d", image, i), "replicated", "", image)
			if err != nil {
				return srv.Annotate(err)
			}
			slog.Info("disk from golden image", "image", image, "n", i+1, "took", took)
			clones[image] = append(clones[image], took.Seconds())
		}
	}
	opens, err := measureOpens(ctx, tmp, o.cephConf, o.cephUser, o.pool)
	if err != nil {
		return err
	}
	printSummary(o, imports, clones, opens)
	return nil
}
