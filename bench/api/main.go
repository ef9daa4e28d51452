// Command api benchmarks Kumo's API against a real all-in-one server: it starts kumod on
// loopback ports, creates tenants and VMInstances, lists and watches them, reads the embedded
// etcd's database size, and compares the whole with raw puts of the same objects into a plain
// embedded etcd.
//
//	go run ./bench/api                                                   # full run
//	go run ./bench/api --tenants 5 --vms 200 --lists 5 --watch-events 50 # quick run
package main

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"golang.org/x/crypto/ssh"

	"kumo.dev/kumo/bench/internal/kumoserver"
	"kumo.dev/kumo/pkg/client"
)

type options struct {
	kumod       string
	tenants     int
	vms         int
	concurrency int
	lists       int
	watchEvents int
	keep        bool
}

func main() {
	var o options
	flag.StringVar(&o.kumod, "kumod", "", "kumod binary (default: build ./cmd/kumod into the temp dir)")
	flag.IntVar(&o.tenants, "tenants", 100, "tenants to create")
	flag.IntVar(&o.vms, "vms", 10000, "VMInstances to create, spread evenly over the tenants")
	flag.IntVar(&o.concurrency, "concurrency", 16, "concurrent create (and raw put) workers")
	flag.IntVar(&o.lists, "lists", 50, "LISTs of all VMs, and as many LISTs of one namespace")
	flag.IntVar(&o.watchEvents, "watch-events", 1000, "VMs created while watching, to time event delivery")
	flag.BoolVar(&o.keep, "keep", false, "keep the temp dir (server data, log, baseline etcd)")
	flag.Parse()
	if o.tenants < 1 || o.vms < 1 || o.concurrency < 1 || o.lists < 1 || o.watchEvents < 1 {
		fmt.Fprintln(os.Stderr, "bench/api: --tenants, --vms, --concurrency, --lists and --watch-events must be at least 1")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, o); err != nil {
		fmt.Fprintln(os.Stderr, "bench/api:", err)
		os.Exit(1)
	}
}

// report holds every figure the summary prints.
type report struct {
	creates createResult
	lists   listResult
	watch   watchResult
	apiDB   dbSize
	raw     rawResult
}

func run(ctx context.Context, o options) (err error) {
	tmp, err := os.MkdirTemp("", "kumo-bench-api-")
	if err != nil {
		return fmt.Errorf("temp dir: %w", err)
	}
	if o.keep {
		slog.Info("keeping temp dir", "dir", tmp)
	} else {
		defer os.RemoveAll(tmp)
	}

	sshKey, err := newSSHKey()
	if err != nil {
		return err
	}
	bin := o.kumod
	if bin == "" {
		bins, err := kumoserver.Build(ctx, tmp, "./cmd/kumod")
		if errors.Is(err, kumoserver.ErrNoModule) {
			return fmt.Errorf("%w or pass --kumod", err)
		} else if err != nil {
			return err
		}
		bin = bins["kumod"]
	}

	srv, err := kumoserver.Start(bin, filepath.Join(tmp, "data"), filepath.Join(tmp, "kumod.log"))
	if err != nil {
		return err
	}
	stopped := false
	defer func() {
		if !stopped {
			if serr := srv.Stop(); serr != nil && err == nil {
				err = serr
			}
		}
	}()
	cfg, err := srv.WaitReady(ctx)
	if err != nil {
		return err
	}
	// No client-side rate limiting: the server's speed is what is measured.
	cfg.QPS, cfg.Burst = 1e6, 1e6
	c, err := client.New(cfg)
	if err != nil {
		return fmt.Errorf("clients: %w", err)
	}

	var r report
	namespaces, err := createTenants(ctx, c, o.tenants, o.concurrency)
	if err != nil {
		return srv.Annotate(err)
	}

	slog.Info("creating VMs", "vms", o.vms, "namespaces", len(namespaces), "concurrency", o.concurrency)
	if r.creates, err = createVMs(ctx, c, namespaces, "vm", o.vms, o.concurrency, sshKey, nil); err != nil {
		return srv.Annotate(err)
	}
	slog.Info("VMs created", "vms", o.vms, "took", r.creates.elapsed.Round(time.Millisecond),
		"rate/s", fmt.Sprintf("%.1f", r.creates.rate()), "p50", ms(r.creates.lat.p50), "p99", ms(r.creates.lat.p99))

	if r.lists, err = listVMs(ctx, c, namespaces, o.lists); err != nil {
		return srv.Annotate(err)
	}
	slog.Info("lists done", "all p50", ms(r.lists.all.p50), "one ns p50", ms(r.lists.oneNS.p50))

	if r.watch, err = watchVMs(ctx, c, namespaces, o.watchEvents, o.concurrency, sshKey); err != nil {
		return srv.Annotate(err)
	}
	slog.Info("watch done", "events", r.watch.events, "delivery p50", ms(r.watch.delivery.p50))

	if r.apiDB, err = etcdDBSize(ctx, srv.EtcdURL()); err != nil {
		return err
	}
	// Stop the server before the baseline so that both get the whole machine.
	stopped = true
	if err := srv.Stop(); err != nil {
		return err
	}
	slog.Info("kumod stopped; raw etcd baseline", "puts", len(r.creates.vms))

	if r.raw, err = rawPuts(ctx, filepath.Join(tmp, "raw-etcd"), filepath.Join(tmp, "raw-etcd.log"), r.creates.vms, o.concurrency); err != nil {
		return err
	}
	printSummary(o, r)
	return nil
}

// newSSHKey generates an ed25519 key and returns its public half in authorized_keys form.
func newSSHKey() (string, error) {
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return "", fmt.Errorf("generate ssh key: %w", err)
	}
	sp, err := ssh.NewPublicKey(pub)
	if err != nil {
		return "", fmt.Errorf("ssh public key: %w", err)
	}
	return strings.TrimSpace(string(ssh.MarshalAuthorizedKey(sp))) + " bench@kumo", nil
}

func printSummary(o options, r report) {
	cr, raw := r.creates, r.raw
	var avg int64
	if raw.puts > 0 {
		avg = raw.bytes / int64(raw.puts)
	}
	fmt.Printf("\n== bench/api (%d VMs, %d tenants, concurrency %d)\n", o.vms, o.tenants, o.concurrency)
	fmt.Printf("creates           %8.1f/s  p50 %-8s p99 %-8s max %s\n", cr.rate(), ms(cr.lat.p50), ms(cr.lat.p99), ms(cr.lat.max))
	fmt.Printf("raw etcd puts     %8.1f/s  p50 %-8s p99 %-8s max %s  (%d B/object)\n", raw.rate(), ms(raw.lat.p50), ms(raw.lat.p99), ms(raw.lat.max), avg)
	fmt.Printf("ratio creates/puts %.3f   p50 ratio %.2f\n", ratio(cr.rate(), raw.rate()), ratio(float64(cr.lat.p50), float64(raw.lat.p50)))
	fmt.Printf("%-17s p50 %-8s p99 %s\n", fmt.Sprintf("list all (%d)", r.lists.allItems), ms(r.lists.all.p50), ms(r.lists.all.p99))
	fmt.Printf("%-17s p50 %-8s p99 %s\n", fmt.Sprintf("list one ns (%d)", r.lists.oneNSItems), ms(r.lists.oneNS.p50), ms(r.lists.oneNS.p99))
	fmt.Printf("watch delivery    p50 %-8s p99 %-8s (%d events, %.1f events/s, %d before the create response)\n",
		ms(r.watch.delivery.p50), ms(r.watch.delivery.p99), r.watch.events, r.watch.rate, r.watch.early)
	fmt.Printf("  from create sent p50 %-8s p99 %s\n", ms(r.watch.sinceSent.p50), ms(r.watch.sinceSent.p99))
	fmt.Printf("etcd db size      API %.2f MiB (in use %.2f)  raw %.2f MiB (in use %.2f)  ratio %.2f (in use %.2f)\n",
		mib(r.apiDB.total), mib(r.apiDB.inUse), mib(raw.db.total), mib(raw.db.inUse),
		ratio(float64(r.apiDB.total), float64(raw.db.total)), ratio(float64(r.apiDB.inUse), float64(raw.db.inUse)))
}
