// Command etcdload is the bounded Go load generator of benchmarks/kv.py, for three paths
// (-api): etcd's own gRPC API with etcd's official Go client (go.etcd.io/etcd/client/v3, the
// version of the local stack's etcd; the default, etcd's best figure), etcd's JSON gateway
// (etcd-json) and kvtrace's HTTP client API (kvtrace), the last two with one small HTTP/1.1
// client (http.go), so that kvtrace and etcd are loaded by a generator that takes less CPU
// from the servers than the Python one (16-24 µs per operation against 30-37 in one run).
//
// N clients (goroutines) each run puts of -value-size bytes (-write-ratio 1) or reads
// (-write-ratio 0; etcd: linearizable ranges; kvtrace: GET at -consistency), or a mix, on keys
// drawn uniformly from -keys keys under -prefix, until -duration has passed. With -api grpc
// the clients multiplex over -conns gRPC connections (HTTP/2; 0: one per endpoint, etcd's best
// figure: one per client did 14-64% fewer ops/s in an A/B on 2 cores,
// benchmarks/results/etcdload-connections-ab-2026-12-07.json), each pinned to one endpoint,
// round-robin; over HTTP each client has its own keep-alive connection, round-robin over the
// endpoints (as kvtrace bench's clients). It prints one JSON document on stdout:
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

	apiGRPC     = "grpc"
	apiEtcdJSON = "etcd-json"
	apiKvtrace  = "kvtrace"
)

// targets is each -api's target name in the report (kvnode.bench.Result's target).
var targets = map[string]string{apiGRPC: "etcd-grpc", apiEtcdJSON: "etcd-json", apiKvtrace: "kvtrace"}

type config struct {
	api         string
	consistency string
	endpoints   []string
	clients     int
	conns       int
	duration    time.Duration
	keys        int
	valueSize   int
	writeRatio  float64
	prefix      string
	preload     bool
	timeout     time.Duration
	seed        uint64
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
	endpoints := fs.String("endpoints", "", "comma list of client URLs (http://HOST:PORT), required")
	cfg := config{}
	fs.StringVar(&cfg.api, "api", apiGRPC, "the path loaded: grpc (etcd's gRPC API), etcd-json (etcd's JSON gateway) or kvtrace (kvtrace's HTTP API)")
	fs.StringVar(&cfg.consistency, "consistency", "quorum", "-api kvtrace: the consistency level of every request (one, quorum, all)")
	fs.IntVar(&cfg.clients, "clients", 32, "concurrent clients (1..4096)")
	fs.IntVar(&cfg.conns, "conns", 0, "-api grpc: gRPC connections the clients share (0: one per endpoint)")
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
	case targets[c.api] == "":
		return fmt.Errorf("-api: expected grpc, etcd-json or kvtrace, got %q", c.api)
	case c.consistency != "one" && c.consistency != "quorum" && c.consistency != "all":
		return fmt.Errorf("-consistency: expected one, quorum or all, got %q", c.consistency)
	case c.conns != 0 && c.api != apiGRPC:
		return fmt.Errorf("-conns: only with -api grpc (over HTTP each client has its own connection), got %d", c.conns)
	case len(c.endpoints) == 0:
		return errors.New("-endpoints: expected at least one client URL, got none")
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
	if c.api != apiGRPC {
		for _, ep := range c.endpoints {
			if _, err := hostPort(c.api, ep); err != nil {
				return err
			}
		}
	}
	return nil
}

// kvClient runs one operation (a put when write, else a read) of one client.
type kvClient interface {
	op(write bool, key string) error
	close()
}

// grpcClient is a client over a shared clientv3 connection (closed by whoever opened it).
type grpcClient struct {
	cli     *clientv3.Client
	value   string
	timeout time.Duration
}

func (g grpcClient) op(write bool, key string) error {
	ctx, cancel := context.WithTimeout(context.Background(), g.timeout)
	defer cancel()
	var err error
	if write {
		_, err = g.cli.Put(ctx, key, g.value)
	} else {
		_, err = g.cli.Get(ctx, key) // linearizable: clientv3's default (not WithSerializable)
	}
	return err
}

func (g grpcClient) close() {}

// connect opens the gRPC connections (each pinned to one endpoint, round-robin) and checks
// that every endpoint answers, so that a wrong address fails before the run instead of as
// errors.
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

func closeClients(clients []kvClient) {
	for _, c := range clients {
		c.close()
	}
}

// openClients is one kvClient per client of cfg's path, and a function that closes them all.
func openClients(cfg config, value []byte) ([]kvClient, func(), error) {
	if cfg.api != apiGRPC {
		clients, err := httpClients(cfg, value)
		return clients, func() { closeClients(clients) }, err
	}
	conns, err := connect(cfg)
	if err != nil {
		return nil, nil, err
	}
	clients := make([]kvClient, cfg.clients)
	for n := range clients {
		clients[n] = grpcClient{cli: conns[n%len(conns)], value: string(value), timeout: cfg.timeout}
	}
	return clients, func() { closeAll(conns) }, nil
}

// connections is how many connections the clients use (the report's conns).
func connections(cfg config) int {
	switch {
	case cfg.api != apiGRPC:
		return cfg.clients
	case cfg.conns == 0:
		return min(len(cfg.endpoints), cfg.clients)
	default:
		return cfg.conns
	}
}

func key(cfg config, i int) string { return fmt.Sprintf("%s%d", cfg.prefix, i) }

// preload puts every key once, over at most 64 of the clients (each its own share of keys).
func preload(cfg config, clients []kvClient) error {
	workers := min(len(clients), 64)
	var wg sync.WaitGroup
	errs := make([]error, workers)
	for c := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := c; i < cfg.keys && errs[c] == nil; i += workers {
				errs[c] = clients[c].op(true, key(cfg, i))
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

func runClient(cfg config, n int, cli kvClient, deadline time.Time) clientResult {
	rng := rand.New(rand.NewPCG(cfg.seed, uint64(n)+1))
	var res clientResult
	for time.Now().Before(deadline) {
		write := rng.Float64() < cfg.writeRatio
		k := key(cfg, rng.IntN(cfg.keys))
		start := time.Now()
		err := cli.op(write, k)
		elapsed := time.Since(start).Seconds()
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
		Target: targets[cfg.api], Clients: cfg.clients, Conns: conns, Seconds: round(elapsed, 3),
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
	valueBytes := make([]byte, cfg.valueSize)
	vrng := rand.New(rand.NewPCG(cfg.seed, 0))
	for i := range valueBytes {
		valueBytes[i] = byte(vrng.UintN(256))
	}
	clients, closeThem, err := openClients(cfg, valueBytes)
	if err != nil {
		return report{}, err
	}
	defer closeThem()
	if cfg.preload {
		if err := preload(cfg, clients); err != nil {
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
			results[n] = runClient(cfg, n, clients[n], deadline)
		}()
	}
	wg.Wait()
	return summarize(cfg, connections(cfg), results, time.Since(start).Seconds()), nil
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
