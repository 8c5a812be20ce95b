// Command etcdload is a bounded load generator for etcd's own gRPC path, with etcd's official
// Go client (go.etcd.io/etcd/client/v3, the version of the local stack's etcd): the peer that
// benchmarks/kv.py measures besides etcd's JSON gateway and kvtrace.
//
// N clients (goroutines) each run puts of -value-size bytes (-write-ratio 1) or linearizable
// ranges (-write-ratio 0), or a mix, on keys drawn uniformly from -keys keys under -prefix,
// until -duration has passed. Clients multiplex over -conns gRPC connections (HTTP/2; 0: one
// per endpoint, etcd's best figure: one per client did 14-64% fewer ops/s in an A/B on 2
// cores, benchmarks/results/etcdload-connections-ab-2026-12-07.json), each pinned to one
// endpoint, round-robin. It prints one JSON document on stdout:
// ops/s, latency percentiles, errors (with up to 5 samples).
//
// Exit status: 0 when the run completed (errors are counted in the JSON, not fatal), 1 when an
// endpoint does not answer before the run, 2 on a bad flag.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

const (
	maxDuration = 10 * time.Minute
	maxClients  = 4096
	maxKeys     = 1_000_000
	maxSamples  = 5
)

type config struct {
	endpoints  []string
	clients    int
	conns      int
	duration   time.Duration
	keys       int
	valueSize  int
	writeRatio float64
	prefix     string
	preload    bool
	timeout    time.Duration
	seed       uint64
}

// opStats is one operation kind's figures, the shape of kvnode.bench's by_operation entries.
type opStats struct {
	Ops     int     `json:"ops"`
	OpsPerS float64 `json:"ops_per_s"`
	P50Ms   float64 `json:"p50_ms"`
	P99Ms   float64 `json:"p99_ms"`
}

// report is the JSON printed on stdout; its fields are kvnode.bench.Result's, plus conns.
type report struct {
	Target       string             `json:"target"`
	Clients      int                `json:"clients"`
	Conns        int                `json:"conns"`
	Seconds      float64            `json:"seconds"`
	Ops          int                `json:"ops"`
	Errors       int                `json:"errors"`
	OpsPerS      float64            `json:"ops_per_s"`
	P50Ms        float64            `json:"p50_ms"`
	P95Ms        float64            `json:"p95_ms"`
	P99Ms        float64            `json:"p99_ms"`
	ByOperation  map[string]opStats `json:"by_operation"`
	ErrorSamples []string           `json:"error_samples"`
}

func parseFlags(args []string) (config, error) {
	fs := flag.NewFlagSet("etcdload", flag.ContinueOnError)
	endpoints := fs.String("endpoints", "", "comma list of etcd client URLs (http://HOST:PORT), required")
	cfg := config{}
	fs.IntVar(&cfg.clients, "clients", 32, "concurrent clients (1..4096)")
	fs.IntVar(&cfg.conns, "conns", 0, "gRPC connections the clients share (0: one per endpoint)")
	fs.DurationVar(&cfg.duration, "duration", 5*time.Second, "how long to run (at most 10m)")
	fs.IntVar(&cfg.keys, "keys", 2000, "size of the key space (1..1000000)")
	fs.IntVar(&cfg.valueSize, "value-size", 100, "bytes per value")
	fs.Float64Var(&cfg.writeRatio, "write-ratio", 1.0, "share of puts (the rest: linearizable ranges), 0..1")
	fs.StringVar(&cfg.prefix, "prefix", "bench/", "key prefix")
	fs.BoolVar(&cfg.preload, "preload", false, "put every key once before the run")
	fs.DurationVar(&cfg.timeout, "timeout", 10*time.Second, "deadline of one operation")
	fs.Uint64Var(&cfg.seed, "seed", 1, "random seed (keys and value bytes)")
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	if fs.NArg() > 0 {
		return cfg, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	for _, ep := range strings.Split(*endpoints, ",") {
		if ep = strings.TrimSpace(ep); ep != "" {
			cfg.endpoints = append(cfg.endpoints, ep)
		}
	}
	return cfg, cfg.validate()
}

func (c config) validate() error {
	switch {
	case len(c.endpoints) == 0:
		return errors.New("-endpoints: expected at least one etcd client URL, got none")
	case c.clients < 1 || c.clients > maxClients:
		return fmt.Errorf("-clients: expected 1..%d, got %d", maxClients, c.clients)
	case c.conns < 0 || c.conns > c.clients:
		return fmt.Errorf("-conns: expected 0..clients (%d), got %d", c.clients, c.conns)
	case c.duration <= 0 || c.duration > maxDuration:
		return fmt.Errorf("-duration: expected (0, %s], got %s", maxDuration, c.duration)
	case c.keys < 1 || c.keys > maxKeys:
		return fmt.Errorf("-keys: expected 1..%d, got %d", maxKeys, c.keys)
	case c.valueSize < 0 || c.valueSize > 1<<20:
		return fmt.Errorf("-value-size: expected 0..1048576 bytes, got %d", c.valueSize)
	case c.writeRatio < 0 || c.writeRatio > 1:
		return fmt.Errorf("-write-ratio: expected 0..1, got %g", c.writeRatio)
	case c.timeout <= 0:
		return fmt.Errorf("-timeout: expected a positive duration, got %s", c.timeout)
	}
	return nil
}

// connect opens the connections (each pinned to one endpoint, round-robin) and checks that
// every endpoint answers, so that a wrong address fails before the run instead of as errors.
func connect(cfg config) ([]*clientv3.Client, error) {
	n := cfg.conns
	if n == 0 {
		n = min(len(cfg.endpoints), cfg.clients)
	}
	conns := make([]*clientv3.Client, 0, n)
	for i := range n {
		ep := cfg.endpoints[i%len(cfg.endpoints)]
		cli, err := clientv3.New(clientv3.Config{
			Endpoints:   []string{ep},
			DialTimeout: 5 * time.Second,
			Logger:      zap.NewNop(),
		})
		if err != nil {
			closeAll(conns)
			return nil, fmt.Errorf("endpoint %s: %w", ep, err)
		}
		conns = append(conns, cli)
		if i < len(cfg.endpoints) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			_, err = cli.Status(ctx, ep)
			cancel()
			if err != nil {
				closeAll(conns)
				return nil, fmt.Errorf("endpoint %s does not answer: %w", ep, err)
			}
		}
	}
	return conns, nil
}

func closeAll(conns []*clientv3.Client) {
	for _, c := range conns {
		_ = c.Close()
	}
}

func key(cfg config, i int) string { return fmt.Sprintf("%s%d", cfg.prefix, i) }

func preload(cfg config, conns []*clientv3.Client, value string) error {
	var wg sync.WaitGroup
	errs := make([]error, len(conns))
	for c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := c; i < cfg.keys && errs[c] == nil; i += len(conns) {
				ctx, cancel := context.WithTimeout(context.Background(), cfg.timeout)
				_, errs[c] = conns[c].Put(ctx, key(cfg, i), value)
				cancel()
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// latencies of one client, in seconds.
type clientResult struct {
	writes, reads []float64
	errors        int
	samples       []string
}

func runClient(cfg config, n int, cli *clientv3.Client, value string, deadline time.Time) clientResult {
	rng := rand.New(rand.NewPCG(cfg.seed, uint64(n)+1))
	var res clientResult
	for time.Now().Before(deadline) {
		write := rng.Float64() < cfg.writeRatio
		k := key(cfg, rng.IntN(cfg.keys))
		ctx, cancel := context.WithTimeout(context.Background(), cfg.timeout)
		start := time.Now()
		var err error
		if write {
			_, err = cli.Put(ctx, k, value)
		} else {
			_, err = cli.Get(ctx, k) // linearizable: clientv3's default (not WithSerializable)
		}
		elapsed := time.Since(start).Seconds()
		cancel()
		switch {
		case err != nil:
			res.errors++
			if len(res.samples) < maxSamples {
				res.samples = append(res.samples, err.Error())
			}
		case write:
			res.writes = append(res.writes, elapsed)
		default:
			res.reads = append(res.reads, elapsed)
		}
	}
	return res
}

// percentile of sorted values, the nearest rank kvnode.bench.percentile uses.
func percentile(sorted []float64, q float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	idx := int(math.Round(q * float64(len(sorted)-1)))
	return sorted[max(0, min(len(sorted)-1, idx))]
}

func round(v float64, places int) float64 {
	scale := math.Pow(10, float64(places))
	return math.Round(v*scale) / scale
}

func summarize(cfg config, conns int, results []clientResult, elapsed float64) report {
	rep := report{
		Target: "etcd-grpc", Clients: cfg.clients, Conns: conns, Seconds: round(elapsed, 3),
		ByOperation: map[string]opStats{}, ErrorSamples: []string{},
	}
	var every, writes, reads []float64
	for _, r := range results {
		writes = append(writes, r.writes...)
		reads = append(reads, r.reads...)
		rep.Errors += r.errors
		for _, s := range r.samples {
			if len(rep.ErrorSamples) < maxSamples {
				rep.ErrorSamples = append(rep.ErrorSamples, s)
			}
		}
	}
	for name, values := range map[string][]float64{"write": writes, "read": reads} {
		if len(values) == 0 {
			continue
		}
		slices.Sort(values)
		every = append(every, values...)
		rep.ByOperation[name] = opStats{
			Ops:     len(values),
			OpsPerS: round(float64(len(values))/elapsed, 1),
			P50Ms:   round(percentile(values, 0.5)*1000, 3),
			P99Ms:   round(percentile(values, 0.99)*1000, 3),
		}
	}
	slices.Sort(every)
	rep.Ops = len(every)
	if elapsed > 0 {
		rep.OpsPerS = round(float64(len(every))/elapsed, 1)
	}
	rep.P50Ms = round(percentile(every, 0.5)*1000, 3)
	rep.P95Ms = round(percentile(every, 0.95)*1000, 3)
	rep.P99Ms = round(percentile(every, 0.99)*1000, 3)
	return rep
}

func run(cfg config) (report, error) {
	conns, err := connect(cfg)
	if err != nil {
		return report{}, err
	}
	defer closeAll(conns)
	valueBytes := make([]byte, cfg.valueSize)
	vrng := rand.New(rand.NewPCG(cfg.seed, 0))
	for i := range valueBytes {
		valueBytes[i] = byte(vrng.UintN(256))
	}
	value := string(valueBytes)
	if cfg.preload {
		if err := preload(cfg, conns, value); err != nil {
			return report{}, fmt.Errorf("preload: %w", err)
		}
	}
	results := make([]clientResult, cfg.clients)
	var wg sync.WaitGroup
	start := time.Now()
	deadline := start.Add(cfg.duration)
	for n := range cfg.clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[n] = runClient(cfg, n, conns[n%len(conns)], value, deadline)
		}()
	}
	wg.Wait()
	return summarize(cfg, len(conns), results, time.Since(start).Seconds()), nil
}

func main() {
	cfg, err := parseFlags(os.Args[1:])
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "etcdload: %v\n", err)
		os.Exit(2)
	}
	// A hard bound besides the loop's: the run, one operation's deadline and the connections'.
	watchdog := time.AfterFunc(cfg.duration+cfg.timeout+30*time.Second, func() {
		fmt.Fprintln(os.Stderr, "etcdload: did not finish within duration + timeout + 30s")
		os.Exit(1)
	})
	defer watchdog.Stop()
	rep, err := run(cfg)
	if err != nil {
		fmt.Fprintf(os.Stderr, "etcdload: %v\n", err)
		os.Exit(1)
	}
	out, _ := json.MarshalIndent(rep, "", "  ")
	fmt.Println(string(out))
}
