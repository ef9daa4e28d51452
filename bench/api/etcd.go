package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/url"
	"strconv"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"

	"kumo.dev/kumo/bench/internal/kumoserver"
)

// dbSize is an etcd member's database size.
type dbSize struct {
	total, inUse int64
}

// etcdDBSize asks the member at endpoint for its database size.
func etcdDBSize(ctx context.Context, endpoint string) (dbSize, error) {
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{endpoint}, DialTimeout: 5 * time.Second})
	if err != nil {
		return dbSize{}, fmt.Errorf("etcd client for %s: %w", endpoint, err)
	}
	defer cli.Close()
	return statusDBSize(ctx, cli, endpoint)
}

// commitWait outlasts etcd's backend batch interval (100ms): writes reach the database file, and
// so its size, only when the batch commits.
const commitWait = time.Second

func statusDBSize(ctx context.Context, cli *clientv3.Client, endpoint string) (dbSize, error) {
	time.Sleep(commitWait)
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	st, err := cli.Status(ctx, endpoint)
	if err != nil {
		return dbSize{}, fmt.Errorf("etcd status of %s: %w", endpoint, err)
	}
	return dbSize{total: st.DbSize, inUse: st.DbSizeInUse}, nil
}

// rawResult is the outcome of the raw etcd baseline.
type rawResult struct {
	puts    int
	bytes   int64
	lat     summary
	elapsed time.Duration
	db      dbSize
}

func (r rawResult) rate() float64 { return float64(r.puts) / r.elapsed.Seconds() }

// rawPuts starts a plain embedded etcd in dir (configured like Kumo's: same compaction), puts
// every VM's stored JSON under /registry/bench/<ns>/<name> with workers goroutines, and reports
// the throughput, latencies and database size.
func rawPuts(ctx context.Context, dir, logPath string, vms []storedVM, workers int) (rawResult, error) {
	var res rawResult
	ports, err := kumoserver.FreePorts(2)
	if err != nil {
		return res, err
	}
	clientURL, _ := url.Parse("http://127.0.0.1:" + strconv.Itoa(ports[0]))
	peerURL, _ := url.Parse("http://127.0.0.1:" + strconv.Itoa(ports[1]))
	ec := embed.NewConfig()
	ec.Name = "bench"
	ec.Dir = dir
	ec.LogLevel = "error"
	// Even at level error, etcd logs harmless errors on Close ("mux: server closed"); keep them
	// out of the report.
	ec.LogOutputs = []string{logPath}
	ec.ListenClientUrls, ec.AdvertiseClientUrls = []url.URL{*clientURL}, []url.URL{*clientURL}
	ec.ListenPeerUrls, ec.AdvertisePeerUrls = []url.URL{*peerURL}, []url.URL{*peerURL}
	ec.InitialCluster = ec.InitialClusterFromName(ec.Name)
	ec.AutoCompactionMode = "periodic"
	ec.AutoCompactionRetention = "5m"
	e, err := embed.StartEtcd(ec)
	if err != nil {
		return res, fmt.Errorf("start baseline etcd in %s: %w", dir, err)
	}
	defer e.Close()
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		return res, fmt.Errorf("baseline etcd failed: %w", err)
	case <-time.After(60 * time.Second):
		return res, fmt.Errorf("baseline etcd not ready after 60s")
	}
	endpoint := clientURL.String()
	slog.Info("baseline etcd ready", "endpoint", endpoint, "dir", dir, "log", logPath)

	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{endpoint}, DialTimeout: 5 * time.Second})
	if err != nil {
		return res, fmt.Errorf("baseline etcd client: %w", err)
	}
	defer cli.Close()

	var lat latencies
	start := time.Now()
	err = parallel(ctx, len(vms), workers, func(ctx context.Context, i int) error {
		vm := vms[i]
		key := "/registry/bench/" + vm.ns + "/" + vm.name
		t0 := time.Now()
		if _, err := cli.Put(ctx, key, string(vm.raw)); err != nil {
			return fmt.Errorf("put %s: %w", key, err)
		}
		lat.add(time.Since(t0))
		return nil
	})
	if err != nil {
		return res, err
	}
	res.elapsed = time.Since(start)
	res.puts = len(vms)
	for _, vm := range vms {
		res.bytes += int64(len(vm.raw))
	}
	res.lat = lat.summary()
	if res.db, err = statusDBSize(ctx, cli, endpoint); err != nil {
		return res, err
	}
	return res, nil
}
