// Command lab benchmarks the lab (internal/lab): the time to bring it up from nothing, the
// leader failover time after kill-dc of the leader's datacenter (p50/p95 over --runs runs,
// healing in between), and API write latency (p50/p99) through a server whose etcd has one
// member per datacenter namespace, against a single embedded member (an all-in-one kumod on
// loopback) in the same run.
//
//	go run ./bench/lab                 # needs root; builds kumod and kumo
//	go run ./bench/lab --runs 2 --writes 100
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"syscall"
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"kumo.dev/kumo/bench/internal/kumoserver"
	"kumo.dev/kumo/internal/lab"
)

type options struct {
	runs, writes int
	noCeph, keep bool
}

func main() {
	var o options
	flag.IntVar(&o.runs, "runs", 5, "kill-dc/heal cycles for the failover time")
	flag.IntVar(&o.writes, "writes", 300, "sequential creates for the write latency, on each side")
	flag.BoolVar(&o.noCeph, "no-ceph", false, "bring the lab up without Ceph")
	flag.BoolVar(&o.keep, "keep", false, "leave the lab running at the end")
	flag.Parse()
	if o.runs < 1 || o.writes < 10 {
		fmt.Fprintln(os.Stderr, "bench/lab: --runs must be at least 1 and --writes at least 10")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, o); err != nil {
		fmt.Fprintln(os.Stderr, "bench/lab:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, o options) error {
	root, err := kumoserver.ModuleRoot(ctx)
	if err != nil {
		return err
	}
	tmp, err := os.MkdirTemp("", "kumo-bench-lab-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	bins, err := kumoserver.Build(ctx, tmp, "./cmd/kumod", "./cmd/kumo")
	if err != nil {
		return err
	}
	dir := filepath.Join(root, "_output", "lab-bench")
	var upLog bytes.Buffer
	start := time.Now()
	s, err := lab.Up(ctx, lab.Config{Dir: dir, BinDir: tmp, RepoRoot: root, NoCeph: o.noCeph}, &upLog)
	upTime := time.Since(start)
	if !o.keep {
		defer func() { _ = lab.Down(dir, os.Stderr) }()
	}
	if err != nil {
		return fmt.Errorf("lab up: %w\n%s", err, upLog.String())
	}
	slog.Info("lab up", "took", upTime.Round(100*time.Millisecond))
	if !s.ReplicatedCP {
		return errors.New("kumod has no replicated control plane (--etcd-initial-cluster): nothing to fail over")
	}

	// API write latency: the lab's first server (3 etcd members in 3 namespaces) vs a single
	// embedded member.
	labLat, err := writeLatency(ctx, s.Kubeconfig, s.Datacenters[0].URL, "lab", o.writes)
	if err != nil {
		return err
	}
	single, err := kumoserver.Start(bins["kumod"], filepath.Join(tmp, "single"), filepath.Join(tmp, "single.log"), "--accel", "tcg")
	if err != nil {
		return err
	}
	cfg, err := single.WaitReady(ctx)
	if err != nil {
		_ = single.Stop()
		return err
	}
	singleLat, err := writeLatency(ctx, single.Kubeconfig(), cfg.Host, "single", o.writes)
	_ = single.Stop()
	if err != nil {
		return err
	}

	// Failover: kill the leader's datacenter, time the new leader, heal, wait until whole.
	var failovers []time.Duration
	for i := range o.runs {
		holder, dc, _, err := s.Leader(ctx, s.Datacenters[0].URL)
		if err != nil {
			// dc1 may be the one healing from the previous run: ask another.
			holder, dc, _, err = s.Leader(ctx, s.Datacenters[1].URL)
		}
		if err != nil {
			return err
		}
		killed := time.Now()
		if err := lab.KillDC(s, dc, os.Stderr); err != nil {
			return err
		}
		_, seen, err := s.WaitNewLeader(ctx, holder, dc, killed, time.Minute)
		if err != nil {
			return err
		}
		failovers = append(failovers, seen.Sub(killed))
		slog.Info("failover", "run", i+1, "killed", dc, "took", seen.Sub(killed).Round(time.Millisecond))
		if err := lab.Heal(ctx, s, os.Stderr); err != nil {
			return err
		}
		d, _ := s.DC(dc)
		hctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		for lab.Readyz(hctx, s.Kubeconfig, d.URL) != nil && hctx.Err() == nil {
			time.Sleep(200 * time.Millisecond)
		}
		cancel()
		if err := lab.WaitNodesReady(ctx, s, 2*time.Minute); err != nil {
			return err
		}
	}
	slices.Sort(failovers)
	fmt.Printf("\nlab (%d datacenters, %d nodes%s), %s\n", len(s.Datacenters), len(s.Nodes),
		map[bool]string{true: "", false: ", Ceph"}[o.noCeph], time.Now().UTC().Format("2006-01-02 15:04"))
	fmt.Printf("| measure | value |\n|---|---|\n")
	fmt.Printf("| lab up from nothing | %.1f s |\n", upTime.Seconds())
	fmt.Printf("| leader failover after kill-dc (%d runs) | p50 %v, p95 %v |\n", len(failovers),
		kumoserver.Percentile(failovers, 50).Round(time.Millisecond), kumoserver.Percentile(failovers, 95).Round(time.Millisecond))
	fmt.Printf("\n| API create latency (%d sequential) | p50 | p99 |\n|---|---|---|\n", o.writes)
	fmt.Printf("| 3 etcd members, one per datacenter namespace | %v | %v |\n", labLat[0], labLat[1])
	fmt.Printf("| 1 embedded member (all-in-one) | %v | %v |\n", singleLat[0], singleLat[1])
	fmt.Printf("| ratio | %.2f× | %.2f× |\n", float64(labLat[0])/float64(singleLat[0]), float64(labLat[1])/float64(singleLat[1]))
	return nil
}

// writeLatency creates n namespaces one after the other through the server at url and returns
// the p50 and p99 of the create round trips.
func writeLatency(ctx context.Context, kubeconfig, url, prefix string, n int) ([2]time.Duration, error) {
	cfg, err := clientcmd.BuildConfigFromFlags(url, kubeconfig)
	if err != nil {
		return [2]time.Duration{}, err
	}
	hc, err := rest.HTTPClientFor(cfg)
	if err != nil {
		return [2]time.Duration{}, err
	}
	var lat []time.Duration
	for i := range n {
		body := fmt.Sprintf(`{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"bench-%s-%d-%d"}}`, prefix, time.Now().Unix(), i)
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		req, err := http.NewRequestWithContext(rctx, http.MethodPost, url+"/api/v1/namespaces", bytes.NewBufferString(body))
		if err != nil {
			cancel()
			return [2]time.Duration{}, err
		}
		req.Header.Set("Content-Type", "application/json")
		t0 := time.Now()
		resp, err := hc.Do(req)
		d := time.Since(t0)
		cancel()
		if err != nil {
			return [2]time.Duration{}, fmt.Errorf("create namespace via %s: %w", url, err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusCreated {
			return [2]time.Duration{}, fmt.Errorf("create namespace via %s: %s", url, resp.Status)
		}
		lat = append(lat, d)
	}
	slices.Sort(lat)
	return [2]time.Duration{kumoserver.Percentile(lat, 50).Round(10 * time.Microsecond), kumoserver.Percentile(lat, 99).Round(10 * time.Microsecond)}, nil
}
