package main

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/cloudwego/kitex/pkg/registry"
	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/anyconn/kitex-anyconn/internal/etcdembed"
	"github.com/anyconn/kitex-anyconn/internal/etcdreg"
	"github.com/anyconn/kitex-anyconn/transport"
)

// instanceFigures are what one size of the instances part measured.
type instanceFigures struct {
	Instances      int                `json:"instances"`
	CallerCPU      float64            `json:"caller_cpu_ms_per_s"`      // at CALL_INTERVAL's default (1 call/s)
	CallerRSS      int64              `json:"caller_rss_bytes"`         // at the end of that window
	EtcdReqPerSec  float64            `json:"etcd_requests_per_s"`      // the caller's, all methods but LeaseKeepAlive
	EtcdByMethod   map[string]float64 `json:"etcd_requests_per_s_by"`   // per gRPC method
	WindowS        float64            `json:"window_s"`                 // of the two figures above
	RegisterMs     []float64          `json:"register_to_call_ms"`      // each trial
	DeregisterMs   []float64          `json:"deregister_to_call_ms"`    // each trial
	CallsFailed    int                `json:"calls_failed"`             // by the fast caller, over its trials
	CallsOK        int                `json:"calls_ok"`                 // by the fast caller
	RegisterSecs   float64            `json:"registering_s"`            // time to register them all
	DiscoveryLines int                `json:"caller_discovery_lines"`   // caller log lines that are not calls
	Env            string             `json:"caller_discovery_refresh"` // DISCOVERY_REFRESH if set
}

// instancesConfig is the instances part's settings.
type instancesConfig struct {
	bin      string         // folder of the echo and caller binaries
	kind     transport.Kind // the transport of echo and caller
	window   time.Duration  // CPU and request-rate window
	trials   int            // registration and deregistration trials
	interval time.Duration  // the fast caller's CALL_INTERVAL
}

// instanceAddr is the address registration i advertises: each its own
// loopback IP (127.20.0.1 up), all served by one echo on 0.0.0.0:port.
func instanceAddr(block byte, i int, port int) string {
	return net.JoinHostPort(net.IPv4(127, block, byte(i/250%250), byte(i%250+1)).String(), strconv.Itoa(port))
}

// instancesPart runs the instances part for every size: one etcd (in this
// process), one real echo (bin/echo, listening on 0.0.0.0), registrations
// made by etcdreg.Registry, and a real caller (bin/caller) per phase.
func instancesPart(sizes []int, c instancesConfig) ([]instanceFigures, error) {
	dir, err := os.MkdirTemp("", "kitex-anyconn-scale-etcd-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	etcd, err := etcdembed.Start(dir, "")
	if err != nil {
		return nil, err
	}
	defer etcd.Close()
	cli, err := etcdreg.NewEtcdClient(etcdreg.EtcdConfig{Endpoints: []string{etcd.Endpoint()}}, nil)
	if err != nil {
		return nil, err
	}
	defer cli.Close()

	echoAddr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	_, portS, _ := net.SplitHostPort(echoAddr)
	port, _ := strconv.Atoi(portS)
	admin, err := freeAddr()
	if err != nil {
		return nil, err
	}
	echoProc, err := startProc("echo", filepath.Join(c.bin, "echo"), nil, []string{
		"TRANSPORT=" + string(c.kind), "ETCD_ENDPOINTS=" + etcd.Endpoint(),
		// It registers itself under another name: the caller finds only
		// the registrations made here, every one of them served by it.
		"SERVICE_NAME=echo-backend", "LISTEN_ADDR=0.0.0.0:" + portS, "ADVERTISE_ADDR=" + echoAddr,
		"ADMIN_ADDR=" + admin, "LOG_LEVEL=warn", "DRAIN_DELAY=0s",
	}, nil)
	if err != nil {
		return nil, err
	}
	defer echoProc.stop(10 * time.Second)
	if err := waitDial(echoAddr, 20*time.Second); err != nil {
		return nil, fmt.Errorf("echo: %w", err)
	}

	var out []instanceFigures
	for _, n := range sizes {
		f, err := measureInstances(cli, etcd.Endpoint(), n, port, c)
		if err != nil {
			return out, fmt.Errorf("%d instances: %w", n, err)
		}
		out = append(out, f)
	}
	return out, nil
}

// waitDial waits until addr accepts a TCP connection.
func waitDial(addr string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			return c.Close()
		}
		if time.Now().After(deadline) {
			return err
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// register keeps one registration in etcd the way echo does.
func register(cli *clientv3.Client, addr string, weight int, kind transport.Kind) (*etcdreg.Registry, error) {
	r := etcdreg.NewRegistry(cli, etcdreg.RegistryOptions{Advertise: addr})
	tcp, _ := net.ResolveTCPAddr("tcp", addr)
	return r, r.Register(&registry.Info{ServiceName: "echo", Addr: tcp, Weight: weight,
		Tags: etcdreg.Tags(kind, "/kitex", false)})
}

// callLog is what a caller process logged: one entry per call.
type callLog struct {
	mu    sync.Mutex
	calls []callEvent
	other int // lines that are not calls
}

type callEvent struct {
	at     time.Time
	target string
	ok     bool
}

func (l *callLog) onLine(_ *proc, line string, at time.Time) {
	var e struct {
		Msg    string `json:"msg"`
		Target string `json:"target"`
	}
	_ = json.Unmarshal([]byte(line), &e)
	l.mu.Lock()
	defer l.mu.Unlock()
	switch e.Msg {
	case "call ok", "call failed":
		l.calls = append(l.calls, callEvent{at: at, target: e.Target, ok: e.Msg == "call ok"})
	default:
		l.other++
	}
}

// since returns the calls logged after t.
func (l *callLog) since(t time.Time) []callEvent {
	l.mu.Lock()
	defer l.mu.Unlock()
	i := sort.Search(len(l.calls), func(i int) bool { return l.calls[i].at.After(t) })
	return append([]callEvent(nil), l.calls[i:]...)
}

func (l *callLog) counts() (ok, failed int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, c := range l.calls {
		if c.ok {
			ok++
		} else {
			failed++
		}
	}
	return ok, failed
}

// startCaller starts bin/caller against etcd with CALL_INTERVAL interval
// (its default if zero) and waits for its first successful call.
func startCaller(c instancesConfig, endpoint string, interval time.Duration, log *callLog) (*proc, error) {
	admin, err := freeAddr()
	if err != nil {
		return nil, err
	}
	env := []string{"TRANSPORT=" + string(c.kind), "ETCD_ENDPOINTS=" + endpoint, "ADMIN_ADDR=" + admin, "LOG_LEVEL=info", "LOG_FORMAT=json"}
	if interval > 0 {
		env = append(env, "CALL_INTERVAL="+interval.String())
	}
	p, err := startProc("caller", filepath.Join(c.bin, "caller"), nil, env, log.onLine)
	if err != nil {
		return nil, err
	}
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if ok, _ := log.counts(); ok > 0 {
			return p, nil
		}
		if time.Now().After(deadline) {
			p.stop(5 * time.Second)
			return nil, fmt.Errorf("the caller made no successful call in 20 s")
		}
	}
}

// etcdRequests returns the messages etcd's gRPC server received so far, by
// method (its own metrics: this process's default registry).
func etcdRequests() map[string]float64 {
	out := map[string]float64{}
	mfs, err := prometheus.DefaultGatherer.Gather()
	if err != nil {
		return out
	}
	for _, mf := range mfs {
		if mf.GetName() != "grpc_server_msg_received_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if lp.GetName() == "grpc_method" {
					out[lp.GetValue()] += m.GetCounter().GetValue()
				}
			}
		}
	}
	return out
}

func measureInstances(cli *clientv3.Client, endpoint string, n, port int, c instancesConfig) (instanceFigures, error) {
	f := instanceFigures{Instances: n, Env: os.Getenv("DISCOVERY_REFRESH")}
	t0 := time.Now()
	regs := make([]*etcdreg.Registry, n)
	for i := range regs {
		r, err := register(cli, instanceAddr(20, i, port), 10, c.kind)
		if err != nil {
			return f, err
		}
		regs[i] = r
	}
	defer deregisterAll(regs)
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		done := 0
		for _, r := range regs {
			if r.Registered() {
				done++
			}
		}
		if done == n {
			break
		}
		if time.Now().After(deadline) {
			return f, fmt.Errorf("%d of %d registered after 60 s", done, n)
		}
	}
	f.RegisterSecs = time.Since(t0).Seconds()

	// A caller at its default call rate: its CPU and its etcd requests.
	var idle callLog
	caller, err := startCaller(c, endpoint, 0, &idle)
	if err != nil {
		return f, err
	}
	time.Sleep(2 * time.Second)
	r0, start := etcdRequests(), time.Now()
	f.CallerCPU = cpuWindow(caller, c.window)
	r1 := etcdRequests()
	f.WindowS = time.Since(start).Seconds()
	f.CallerRSS = caller.rss()
	caller.stop(10 * time.Second)
	f.DiscoveryLines = idle.other
	f.EtcdByMethod = map[string]float64{}
	for m, v := range r1 {
		d := (v - r0[m]) / f.WindowS
		if d <= 0 {
			continue
		}
		f.EtcdByMethod[m] = d
		if m != "LeaseKeepAlive" { // the registrations' own keep-alives
			f.EtcdReqPerSec += d
		}
	}

	// A fast caller: how soon a registration and a deregistration show in
	// its calls. The probe registration carries 99 % of the weight, so the
	// first call after the caller learns of it goes there, and after its
	// deregistration no call does.
	var fast callLog
	caller, err = startCaller(c, endpoint, c.interval, &fast)
	if err != nil {
		return f, err
	}
	defer caller.stop(10 * time.Second)
	time.Sleep(time.Second)
	for trial := 0; trial < c.trials; trial++ {
		addr := instanceAddr(21, trial+n*c.trials, port) // a new address each trial
		reg, dereg, err := probe(cli, addr, 99*10*n, c.kind, &fast)
		if err != nil {
			return f, fmt.Errorf("trial %d: %w", trial, err)
		}
		f.RegisterMs = append(f.RegisterMs, reg)
		f.DeregisterMs = append(f.DeregisterMs, dereg)
	}
	f.CallsOK, f.CallsFailed = fast.counts()
	fmt.Fprintf(os.Stderr, "instances %5d: caller %.2f ms CPU/s, %.2f etcd requests/s, register->call %v ms, deregister->call %v ms\n",
		n, f.CallerCPU, f.EtcdReqPerSec, f.RegisterMs, f.DeregisterMs)
	return f, nil
}

// phase returns a random wait of up to 2 s (DISCOVERY_REFRESH if shorter):
// the period at which callers polled etcd before they watched it, so that a
// polling caller is met at any phase of its ticker.
func phase() time.Duration {
	period := 2 * time.Second
	if d, err := time.ParseDuration(os.Getenv("DISCOVERY_REFRESH")); err == nil && d > 0 && d < period {
		period = d
	}
	return rand.N(period)
}

// probe registers addr, waits for the first call to it, deregisters it and
// waits until calls stop going there; it returns both delays in ms.
func probe(cli *clientv3.Client, addr string, weight int, kind transport.Kind, log *callLog) (float64, float64, error) {
	// At a random moment of the caller's refresh period: a poll would
	// otherwise meet the same phase of its ticker at every trial.
	time.Sleep(phase())
	r, err := register(cli, addr, weight, kind)
	if err != nil {
		return 0, 0, err
	}
	var t0 time.Time
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
		if r.Registered() {
			t0 = time.Now()
			break
		}
		if time.Now().After(deadline) {
			_ = r.Deregister(nil)
			return 0, 0, fmt.Errorf("%s not registered after 10 s", addr)
		}
	}
	var reg float64
	for deadline := t0.Add(15 * time.Second); ; time.Sleep(2 * time.Millisecond) {
		calls := log.since(t0)
		if i := slices.IndexFunc(calls, func(e callEvent) bool { return e.target == addr }); i >= 0 {
			reg = float64(calls[i].at.Sub(t0).Microseconds()) / 1e3
			break
		}
		if time.Now().After(deadline) {
			_ = r.Deregister(nil)
			return 0, 0, fmt.Errorf("no call reached %s within 15 s of its registration", addr)
		}
	}
	time.Sleep(100*time.Millisecond + phase())
	t1 := time.Now() // Deregister deletes the key (and revokes the lease) from here
	if err := r.Deregister(nil); err != nil {
		return reg, 0, err
	}
	// Reflected once calls stop going to addr: the first call after the
	// last one that went there, seen with 20 calls after it.
	const after = 20
	for deadline := t1.Add(15 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		calls := log.since(t1)
		last := -1
		for i, e := range calls {
			if e.target == addr {
				last = i
			}
		}
		if len(calls)-(last+1) >= after {
			return reg, float64(calls[last+1].at.Sub(t1).Microseconds()) / 1e3, nil
		}
		if time.Now().After(deadline) {
			return reg, 0, fmt.Errorf("calls still reach %s 15 s after its deregistration", addr)
		}
	}
}

// deregisterAll deregisters regs, 32 at a time.
func deregisterAll(regs []*etcdreg.Registry) {
	var wg sync.WaitGroup
	sem := make(chan struct{}, 32)
	for _, r := range regs {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			_ = r.Deregister(nil)
		}()
	}
	wg.Wait()
}
