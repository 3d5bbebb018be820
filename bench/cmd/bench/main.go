// Command bench measures every transport against the raw-TCP floor, client
// and server in separate processes on loopback, in interleaved rounds, and
// writes a Markdown table (with ratios to gonet and to the floor) and a JSON
// file. `make bench` runs the full matrix, `make bench-quick` a short one.
package main

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/cloudwego/kitex/client"
	"github.com/cloudwego/kitex/pkg/klog"
	"go.uber.org/zap"

	"github.com/anyconn/kitex-anyconn/bench/internal/sysinfo"
	"github.com/anyconn/kitex-anyconn/internal/obs"
	"github.com/anyconn/kitex-anyconn/kitex_gen/api"
	"github.com/anyconn/kitex-anyconn/kitex_gen/api/echo"
	"github.com/anyconn/kitex-anyconn/transport"
	"github.com/anyconn/kitex-anyconn/transport/tunnel"
	"github.com/anyconn/kitex-anyconn/transport/websocket"
)

// kinds are the transports measured (the WebSocket framing against x/net's
// own is compared by transport/websocket's BenchmarkFraming); yamux-4 is the tunnel with
// 4 sessions per gateway (yamux: TUNNEL_SESSIONS's default); yamux-raw is
// the raw floor's echo over one tunnel stream, no RPC: what yamux alone costs;
// yamux-ws is the tunnel (1 session) carried by a WebSocket connection, as
// agents behind HTTP-only egress run it. Kitex calls use TTHeader, the
// client default; gonet-framed is gonet with plain Framed calls: what
// TTHeader's header costs. gonet-traced is gonet with OpenTelemetry
// tracing on both sides (every call sampled, spans exported over OTLP/HTTP
// to a receiver in this process that discards them): what tracing costs;
// gonet-sampled the same with 1 % of the calls sampled (the caller's
// parentbased_traceidratio decision, which echo follows).
// websocket-tls is websocket over wss:// and yamux-tls the tunnel (1 session)
// with the tunnel's TLS, as production runs them; each is also given as a
// ratio to its plaintext row measured in the same round (see plainOf).
var kinds = []string{"raw", "yamux-raw", "netpoll", "gonet", "gonet-framed", "gonet-traced", "gonet-sampled", "websocket", "websocket-tls", "yamux", "yamux-tls", "yamux-4", "yamux-ws"}

// plainOf maps a -tls kind to its plaintext form.
var plainOf = map[string]string{"websocket-tls": "websocket", "yamux-tls": "yamux"}

// certs are the -tls kinds' certificates, made at start if one is measured.
var certs *benchTLS

// profileDir, if set, receives CPU profiles of every run.
var profileDir string

// warmup is how long each run calls before it measures (shorter with -quick).
var warmup = 300 * time.Millisecond

// sample is one measured run of one transport at one payload and concurrency.
type sample struct {
	Kind        string  `json:"kind"`
	Payload     int     `json:"payload_bytes"`
	Concurrency int     `json:"concurrency"`
	Round       int     `json:"round"`
	QPS         float64 `json:"qps"`
	P50us       float64 `json:"p50_us"`
	P99us       float64 `json:"p99_us"`
	P999us      float64 `json:"p999_us"`
	ClientCPUus float64 `json:"client_cpu_us_per_call"`
	ServerCPUus float64 `json:"server_cpu_us_per_call"`
	AllocsCall  float64 `json:"client_allocs_per_call"`
	Errors      int64   `json:"errors"`
}

// report is what a run measured; the JSON file holds it whole, and -render
// makes the Markdown table and the charts again from it.
type report struct {
	Name       string                 `json:"name"`
	Machine    string                 `json:"machine"`
	Date       string                 `json:"date"`
	Rounds     int                    `json:"rounds"`
	RunSeconds float64                `json:"run_seconds"`
	Kinds      []string               `json:"kinds"`
	Payloads   []int                  `json:"payloads"`
	Concs      []int                  `json:"concurrencies"`
	Samples    []sample               `json:"samples"`
	Ratios     []ratios               `json:"ratios,omitempty"`
	Idle       map[string]idleFigures `json:"idle"`
	IdleCPUSec float64                `json:"idle_cpu_seconds"`
}

// ratios are one row's ratios, each taken within a round and then their
// median, lowest and highest over the rounds (null where the reference was
// not measured): to gonet's calls/s, to raw's, and for the -tls kinds to
// their plaintext form's (PlainKind).
type ratios struct {
	Kind        string      `json:"kind"`
	Payload     int         `json:"payload_bytes"`
	Concurrency int         `json:"concurrency"`
	XGonet      [3]jsonNum  `json:"x_gonet"`
	XRaw        [3]jsonNum  `json:"x_raw"`
	PlainKind   string      `json:"plain_kind,omitempty"`
	XPlain      *[3]jsonNum `json:"x_plain,omitempty"`
}

// jsonNum is a float that encodes NaN as null.
type jsonNum float64

func (n jsonNum) MarshalJSON() ([]byte, error) {
	if math.IsNaN(float64(n)) {
		return []byte("null"), nil
	}
	return json.Marshal(math.Round(float64(n)*1000) / 1000)
}

func nums(r [3]float64) [3]jsonNum { return [3]jsonNum{jsonNum(r[0]), jsonNum(r[1]), jsonNum(r[2])} }

// allRatios computes every row's ratios.
func allRatios(all []sample, payloads, concs []int) []ratios {
	qps := func(s sample) float64 { return s.QPS }
	var out []ratios
	for _, size := range payloads {
		for _, c := range concs {
			for _, k := range kinds {
				r := ratios{Kind: k, Payload: size, Concurrency: c,
					XGonet: nums(ratio(all, k, "gonet", size, c, qps)), XRaw: nums(ratio(all, k, "raw", size, c, qps))}
				if p, ok := plainOf[k]; ok {
					x := nums(ratio(all, k, p, size, c, qps))
					r.PlainKind, r.XPlain = p, &x
				}
				out = append(out, r)
			}
		}
	}
	return out
}

func main() {
	quick := flag.Bool("quick", false, "1 KiB only, concurrency 1 and 16; 3 rounds of 1 s (200 ms of warm-up) unless -rounds or -duration say otherwise")
	rounds := flag.Int("rounds", 5, "rounds, interleaved across transports")
	dur := flag.Duration("duration", 3*time.Second, "measuring time per run")
	only := flag.String("kinds", "", "comma-separated transports to measure (all if empty), e.g. gonet,yamux-4")
	out := flag.String("out", "bench/results", "folder for the Markdown and JSON results")
	render := flag.String("render", "", "measure nothing: write the Markdown table and charts again from this JSON result, next to it")
	payloadList := flag.String("payloads", "", "comma-separated payload sizes in bytes, instead of the run's own (e.g. 16384)")
	concList := flag.String("concs", "", "comma-separated numbers of concurrent callers, instead of the run's own (e.g. 1,64)")
	noIdle := flag.Bool("noidle", false, "skip the idle-connection figures")
	flag.StringVar(&profileDir, "cpuprofile", "", "folder for CPU profiles (pprof) of each run's client (measuring window) and server (whole process); the last round's stay")
	flag.Parse()
	klog.SetLevel(klog.LevelWarn)
	if *render != "" {
		var r report
		b, err := os.ReadFile(*render)
		if err == nil {
			err = json.Unmarshal(b, &r)
		}
		if err != nil {
			fail(fmt.Errorf("%s: %w", *render, err))
		}
		if err := write(r, filepath.Dir(*render), false); err != nil {
			fail(err)
		}
		return
	}
	if profileDir != "" {
		if err := os.MkdirAll(profileDir, 0o755); err != nil {
			fail(err)
		}
	}
	if *only != "" {
		kinds = slices.DeleteFunc(kinds, func(k string) bool { return !slices.Contains(strings.Split(*only, ","), k) })
	}

	r := report{Name: "full", Payloads: []int{128, 1024, 16 << 10}, Concs: []int{1, 16, 64}}
	if *quick {
		set := map[string]bool{}
		flag.Visit(func(f *flag.Flag) { set[f.Name] = true })
		r.Name, r.Payloads, r.Concs = "quick", []int{1024}, []int{1, 16}
		if !set["rounds"] {
			*rounds = 3
		}
		if !set["duration"] {
			*dur = time.Second
		}
		idleCPUWindow = time.Second
		warmup = 200 * time.Millisecond // with the -tls kinds, the quick run stays within about 2 minutes
	}
	if *payloadList != "" {
		r.Payloads = ints(*payloadList)
	}
	if *concList != "" {
		r.Concs = ints(*concList)
	}
	r.Rounds, r.RunSeconds, r.Kinds = *rounds, dur.Seconds(), kinds
	bin, err := buildServer()
	if err != nil {
		fail(err)
	}
	defer os.RemoveAll(filepath.Dir(bin))
	if slices.ContainsFunc(kinds, func(k string) bool { return plainOf[k] != "" }) {
		if certs, err = makeTLS(filepath.Dir(bin)); err != nil {
			fail(fmt.Errorf("certificates: %w", err))
		}
	}

	for round := 1; round <= *rounds; round++ {
		for _, size := range r.Payloads {
			for _, c := range r.Concs {
				for _, k := range kinds {
					s, err := measure(bin, k, size, c, *dur)
					if err != nil {
						fail(fmt.Errorf("%s %dB c=%d: %w", k, size, c, err))
					}
					s.Round = round
					r.Samples = append(r.Samples, s)
					fmt.Fprintf(os.Stderr, "round %d %-9s %6dB c=%-3d %8.0f calls/s p99 %7.0fus\n", round, k, size, c, s.QPS, s.P99us)
				}
			}
		}
	}
	r.Idle = map[string]idleFigures{}
	for _, k := range kinds {
		if *noIdle || plainOf[k] != "" {
			continue // TLS's idle cost is not measured
		}
		if k == "yamux-4" || k == "yamux-raw" || k == "yamux-ws" || k == "gonet-framed" || k == "gonet-traced" || k == "gonet-sampled" {
			continue // a session costs the same (and a WebSocket connection's, measured for websocket); an agent keeps 4; a protocol or tracing changes no idle connection
		}
		f, err := idleCosts(bin, k)
		if err != nil {
			fail(fmt.Errorf("idle costs of %s: %w", k, err))
		}
		r.Idle[k] = f
	}
	r.Machine, r.Date, r.IdleCPUSec = sysinfo.Machine(), time.Now().UTC().Format(time.RFC3339), idleCPUWindow.Seconds()
	if err := write(r, *out, true); err != nil {
		fail(err)
	}
}

// write writes r's Markdown table and charts into dir, and its JSON file if withJSON.
func write(r report, dir string, withJSON bool) error {
	kinds = r.Kinds
	r.Ratios = allRatios(r.Samples, r.Payloads, r.Concs)
	md := table(r.Samples, r.Payloads, r.Concs) + "\n" + idleTable(r.Idle, r.IdleCPUSec)
	fmt.Print(md)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if err := charts(r.Samples, dir, r.Name, 1024, 16); err != nil {
		return err
	}
	if withJSON {
		js, _ := json.MarshalIndent(r, "", "  ")
		if err := os.WriteFile(filepath.Join(dir, r.Name+".json"), js, 0o644); err != nil {
			return err
		}
	}
	header := fmt.Sprintf("# Benchmark (%s)\n\nMachine: %s. Date: %s. %d interleaved rounds of %gs. "+
		"Figures are medians over the rounds, calls/s with its spread (min-max) in brackets. "+
		"Ratios are taken within each round (a transport against gonet or raw measured just before or after it), "+
		"then their median, with the spread of x gonet in brackets: the machine's drift between rounds cancels out. "+
		"x plain is a -tls row against its plaintext row (websocket-tls against websocket, yamux-tls against yamux), "+
		"within each round too, with its spread; the certificates are made at the bench's start (ECDSA P-256, verified by the client).\n\n",
		r.Name, r.Machine, r.Date, r.Rounds, r.RunSeconds)
	return os.WriteFile(filepath.Join(dir, r.Name+".md"), []byte(header+md), 0o644)
}

// ints parses a comma-separated list of positive integers.
func ints(list string) []int {
	var out []int
	for _, f := range strings.Split(list, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n <= 0 {
			fail(fmt.Errorf("%q: not a positive integer", f))
		}
		out = append(out, n)
	}
	return out
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "bench:", err)
	os.Exit(1)
}

func buildServer() (string, error) {
	dir, err := os.MkdirTemp("", "kitex-anyconn-bench-")
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "benchserver")
	cmd := exec.Command("go", "build", "-trimpath", "-o", bin, "./bench/cmd/benchserver")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	return bin, cmd.Run()
}

// server is a running benchserver process.
type server struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	addr  string
}

func startServer(bin string, args ...string) (*server, error) {
	return startServerEnv(bin, nil, args...)
}

// startServerEnv starts the benchserver with env added to this process's.
func startServerEnv(bin string, env []string, args ...string) (*server, error) {
	cmd := exec.Command(bin, args...)
	if env != nil {
		cmd.Env = append(os.Environ(), env...)
	}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "READY ") {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		return nil, fmt.Errorf("benchserver did not start: %q %v", line, err)
	}
	return &server{cmd: cmd, stdin: stdin, addr: strings.TrimSpace(strings.TrimPrefix(line, "READY "))}, nil
}

func (s *server) cpu() time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", s.cmd.Process.Pid))
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b)[strings.LastIndexByte(string(b), ')')+2:])
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * 10 * time.Millisecond // USER_HZ is 100 on Linux
}

func (s *server) stop() {
	_ = s.stdin.Close()
	done := make(chan struct{})
	go func() { _ = s.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = s.cmd.Process.Kill()
		<-done
	}
}

func clientCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// profileName is where the CPU profile of one side of one run goes.
func profileName(kind string, size, conc int, side string) string {
	return filepath.Join(profileDir, fmt.Sprintf("%s-%dB-c%d-%s.pprof", kind, size, conc, side))
}

// profileArgs are the benchserver flags that profile it, if profiles are wanted.
func profileArgs(kind string, size, conc int) []string {
	if profileDir == "" {
		return nil
	}
	return []string{"-cpuprofile", profileName(kind, size, conc, "server")}
}

// profileClient profiles this process, if profiles are wanted, until the returned func is called.
func profileClient(kind string, size, conc int) (func(), error) {
	if profileDir == "" {
		return func() {}, nil
	}
	f, err := os.Create(profileName(kind, size, conc, "client"))
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	return func() { pprof.StopCPUProfile(); _ = f.Close() }, nil
}

// caller makes one call; each worker gets its own.
type caller func(msg []byte) error

func measure(bin, kind string, size, conc int, dur time.Duration) (sample, error) {
	var (
		srv      *server
		err      error
		newCall  func() (caller, func(), error)
		teardown = func() {}
	)
	const token, id = "bench-token-0123456789abcdef", "bench-agent"
	switch kind {
	case "raw":
		if srv, err = startServer(bin, append(profileArgs(kind, size, conc), "-kind", "raw")...); err != nil {
			return sample{}, err
		}
		newCall = func() (caller, func(), error) {
			return rawCaller(func() (net.Conn, error) { return net.Dial("tcp", srv.addr) })
		}
	case "yamux", "yamux-4", "yamux-raw", "yamux-ws", "yamux-tls":
		gcfg := tunnel.GatewayConfig{Token: token}
		var tlsArgs []string
		if kind == "yamux-tls" {
			// As caller and echo run it with TUNNEL_TLS_CERT_FILE on the
			// caller and TUNNEL_TLS_CA_FILE on echo.
			gcfg.TLSConfig = certs.serverConfig()
			tlsArgs = []string{"-tls-ca", certs.caFile}
		}
		gw, err := tunnel.Listen("127.0.0.1:0", gcfg)
		if err != nil {
			return sample{}, err
		}
		teardown = func() { _ = gw.Close() }
		serverKind, sessions, gwAddr := "yamux", "1", gw.Addr().String()
		if kind == "yamux-ws" {
			wl, err := websocket.Listen("127.0.0.1:0", websocket.ListenerConfig{Path: "/tunnel", Stream: true})
			if err == nil {
				err = gw.Serve(wl)
			}
			if err != nil {
				teardown()
				return sample{}, err
			}
			gwAddr = "ws://" + wl.Addr().String() + "/tunnel"
		}
		switch kind {
		case "yamux-4":
			sessions = "4"
		case "yamux-raw":
			serverKind = kind
		}
		args := append(profileArgs(kind, size, conc), "-kind", serverKind, "-sessions", sessions, "-gateway", gwAddr, "-token", token, "-id", id)
		if srv, err = startServer(bin, append(args, tlsArgs...)...); err != nil {
			teardown()
			return sample{}, err
		}
		for deadline := time.Now().Add(10 * time.Second); len(gw.Agents()) == 0; time.Sleep(5 * time.Millisecond) {
			if time.Now().After(deadline) {
				srv.stop()
				teardown()
				return sample{}, fmt.Errorf("the agent never connected")
			}
		}
		if kind == "yamux-raw" {
			newCall = func() (caller, func(), error) {
				return rawCaller(func() (net.Conn, error) { return gw.Open(context.Background(), id) })
			}
		} else {
			newCall = kitexCaller(transport.ClientConfig{Kind: transport.Yamux, Dialer: gw.Dialer()}, id, conc)
		}
	case "gonet-traced", "gonet-sampled":
		env := []string{"OTEL_EXPORTER_OTLP_ENDPOINT=" + otlpSink(), "OTEL_TRACES_SAMPLER=parentbased_always_on"}
		if kind == "gonet-sampled" {
			env = []string{env[0], "OTEL_TRACES_SAMPLER=parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG=0.01"}
		}
		if srv, err = startServerEnv(bin, env, append(profileArgs(kind, size, conc), "-kind", "gonet")...); err != nil {
			return sample{}, err
		}
		tracing, terr := tracingWith(env)
		if terr != nil {
			srv.stop()
			return sample{}, terr
		}
		defer tracing.Stop(zap.NewNop())
		newCall = kitexCaller(transport.ClientConfig{Kind: transport.GoNet}, srv.addr, conc, tracing.ClientOptions()...)
	case "websocket-tls":
		if srv, err = startServer(bin, append(profileArgs(kind, size, conc), "-kind", "websocket", "-tls-cert", certs.certFile, "-tls-key", certs.keyFile)...); err != nil {
			return sample{}, err
		}
		newCall = kitexCaller(transport.ClientConfig{Kind: transport.WebSocket, WebSocket: websocket.DialerConfig{TLSConfig: certs.clientConfig()}}, srv.addr, conc)
	case "gonet-framed":
		if srv, err = startServer(bin, append(profileArgs(kind, size, conc), "-kind", "gonet")...); err != nil {
			return sample{}, err
		}
		newCall = kitexCaller(transport.ClientConfig{Kind: transport.GoNet, Protocol: transport.Framed}, srv.addr, conc)
	default:
		if srv, err = startServer(bin, append(profileArgs(kind, size, conc), "-kind", kind)...); err != nil {
			return sample{}, err
		}
		newCall = kitexCaller(transport.ClientConfig{Kind: transport.Kind(kind)}, srv.addr, conc)
	}
	defer teardown()
	defer srv.stop()
	return load(kind, size, conc, dur, srv, newCall)
}

// otlpSink returns the URL of an OTLP/HTTP endpoint in this process that
// accepts span exports and discards them (started once).
var otlpSink = sync.OnceValue(func() string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fail(err)
	}
	go func() {
		_ = http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.Copy(io.Discard, r.Body)
			w.Header().Set("Content-Type", "application/x-protobuf")
			w.WriteHeader(http.StatusOK) // an empty ExportTraceServiceResponse
		}))
	}()
	return "http://" + ln.Addr().String()
})

// tracingWith returns the client's tracing as the services set it up from
// the OTEL_* variables env ("NAME=value"), which are set only meanwhile.
func tracingWith(env []string) (*obs.Tracing, error) {
	for _, kv := range env {
		name, value, _ := strings.Cut(kv, "=")
		old, had := os.LookupEnv(name)
		_ = os.Setenv(name, value)
		defer func() {
			if had {
				_ = os.Setenv(name, old)
			} else {
				_ = os.Unsetenv(name)
			}
		}()
	}
	return obs.NewTracing(context.Background(), obs.TracingConfig{Service: "bench", Transport: "gonet"})
}

func kitexCaller(cfg transport.ClientConfig, target string, conc int, extra ...client.Option) func() (caller, func(), error) {
	var once sync.Once
	var cli echo.Client
	var ct *transport.ClientTransport
	var initErr error
	return func() (caller, func(), error) {
		once.Do(func() {
			cfg.MaxIdlePerAddress = max(conc, 1)
			if ct, initErr = transport.NewClientTransport(cfg); initErr != nil {
				return
			}
			cli, initErr = echo.NewClient("echo", append(append(ct.Options(), extra...),
				client.WithHostPorts(target), client.WithRPCTimeout(10*time.Second))...)
		})
		if initErr != nil {
			return nil, nil, initErr
		}
		call := func(msg []byte) error {
			req := &api.Request{Message: string(msg)}
			resp, err := cli.Echo(context.Background(), req)
			if err == nil && len(resp.Message) != len(msg) {
				err = fmt.Errorf("reply of %d bytes, want %d", len(resp.Message), len(msg))
			}
			return err
		}
		return call, func() { _ = ct.Close() }, nil
	}
}

func rawCaller(dial func() (net.Conn, error)) (caller, func(), error) {
	c, err := dial()
	if err != nil {
		return nil, nil, err
	}
	var buf []byte
	in := make([]byte, 0, 64<<10)
	return func(msg []byte) error {
		buf = binary.BigEndian.AppendUint32(buf[:0], uint32(len(msg)))
		buf = append(buf, msg...)
		if _, err := c.Write(buf); err != nil {
			return err
		}
		in = slices.Grow(in[:0], len(buf))[:len(buf)]
		_, err := io.ReadFull(c, in)
		return err
	}, func() { _ = c.Close() }, nil
}

func load(kind string, size, conc int, dur time.Duration, srv *server, newCall func() (caller, func(), error)) (sample, error) {
	msg := []byte(strings.Repeat("k", size))
	calls := make([]caller, conc)
	var closers []func()
	defer func() {
		for _, c := range closers {
			c()
		}
	}()
	for i := range calls {
		c, closeFn, err := newCall()
		if err != nil {
			return sample{}, err
		}
		calls[i] = c
		closers = append(closers, closeFn)
	}
	// Warm up: connections, pools, the runtime.
	run(calls, msg, warmup)

	var ms0, ms1 runtime.MemStats
	runtime.ReadMemStats(&ms0)
	stopProfile, err := profileClient(kind, size, conc)
	if err != nil {
		return sample{}, err
	}
	c0, s0 := clientCPU(), srv.cpu()
	start := time.Now()
	lat, errs := run(calls, msg, dur)
	elapsed := time.Since(start)
	stopProfile()
	c1, s1 := clientCPU(), srv.cpu()
	runtime.ReadMemStats(&ms1)

	n := float64(len(lat))
	if n == 0 {
		return sample{}, fmt.Errorf("no call succeeded (%d errors)", errs)
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	pct := func(p float64) float64 { return float64(lat[min(len(lat)-1, int(p*n))].Nanoseconds()) / 1e3 }
	return sample{
		Kind: kind, Payload: size, Concurrency: conc,
		QPS:         n / elapsed.Seconds(),
		P50us:       pct(0.50),
		P99us:       pct(0.99),
		P999us:      pct(0.999),
		ClientCPUus: float64((c1 - c0).Microseconds()) / n,
		ServerCPUus: float64((s1 - s0).Microseconds()) / n,
		AllocsCall:  float64(ms1.Mallocs-ms0.Mallocs) / n,
		Errors:      errs,
	}, nil
}

// run calls from every worker until dur has passed and returns the
// latencies of the calls that succeeded and the number that failed.
func run(calls []caller, msg []byte, dur time.Duration) ([]time.Duration, int64) {
	var wg sync.WaitGroup
	lats := make([][]time.Duration, len(calls))
	errs := make([]int64, len(calls))
	stop := time.Now().Add(dur)
	for i, call := range calls {
		wg.Add(1)
		go func(i int, call caller) {
			defer wg.Done()
			l := make([]time.Duration, 0, 1<<14)
			for {
				t := time.Now()
				if t.After(stop) {
					break
				}
				if err := call(msg); err != nil {
					errs[i]++
					continue
				}
				l = append(l, time.Since(t))
			}
			lats[i] = l
		}(i, call)
	}
	wg.Wait()
	var all []time.Duration
	var e int64
	for i := range lats {
		all = append(all, lats[i]...)
		e += errs[i]
	}
	return all, e
}

// table renders medians with their spread and ratios to gonet and the floor.
func table(all []sample, payloads, concs []int) string {
	var b strings.Builder
	b.WriteString("| payload | conc | transport | calls/s | x gonet | x raw | x plain | p50 µs | p99 µs | p99.9 µs | p99 x gonet | client CPU µs/call | server CPU µs/call | client allocs/call | errors |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	qps := func(s sample) float64 { return s.QPS }
	p99 := func(s sample) float64 { return s.P99us }
	for _, size := range payloads {
		for _, c := range concs {
			for _, k := range kinds {
				var ss []sample
				for _, s := range all {
					if s.Kind == k && s.Payload == size && s.Concurrency == c {
						ss = append(ss, s)
					}
				}
				m, spread := median(ss)
				// A ratio to a transport the run did not measure (-kinds) is left empty.
				spreadCell := func(x [3]float64) string {
					if math.IsNaN(x[0]) {
						return ""
					}
					return fmt.Sprintf("%.2f [%.2f-%.2f]", x[0], x[1], x[2])
				}
				cell := func(x [3]float64) string {
					if math.IsNaN(x[0]) {
						return ""
					}
					return fmt.Sprintf("%.2f", x[0])
				}
				plain := ""
				if p, ok := plainOf[k]; ok {
					plain = spreadCell(ratio(all, k, p, size, c, qps))
				}
				fmt.Fprintf(&b, "| %s | %d | %s | %.0f [%.0f-%.0f] | %s | %s | %s | %.0f | %.0f | %.0f | %s | %.1f | %.1f | %.1f | %d |\n",
					bytesName(size), c, k, m.QPS, spread[0], spread[1],
					spreadCell(ratio(all, k, "gonet", size, c, qps)), cell(ratio(all, k, "raw", size, c, qps)), plain,
					m.P50us, m.P99us, m.P999us, cell(ratio(all, k, "gonet", size, c, p99)),
					m.ClientCPUus, m.ServerCPUus, m.AllocsCall, m.Errors)
			}
		}
	}
	return b.String()
}

// ratio returns the median, the lowest and the highest of f(kind)/f(ref)
// over the rounds, each ratio taken within one round at one payload and
// concurrency; NaN where ref was not measured.
func ratio(all []sample, kind, ref string, size, conc int, f func(sample) float64) [3]float64 {
	byRound := map[int]map[string]float64{}
	for _, s := range all {
		if s.Payload == size && s.Concurrency == conc && (s.Kind == kind || s.Kind == ref) {
			if byRound[s.Round] == nil {
				byRound[s.Round] = map[string]float64{}
			}
			byRound[s.Round][s.Kind] = f(s)
		}
	}
	var rs []float64
	for _, v := range byRound {
		if a, ok := v[kind]; ok {
			if b, ok := v[ref]; ok && b > 0 {
				rs = append(rs, a/b)
			}
		}
	}
	if len(rs) == 0 {
		return [3]float64{math.NaN(), math.NaN(), math.NaN()}
	}
	sort.Float64s(rs)
	return [3]float64{rs[len(rs)/2], rs[0], rs[len(rs)-1]}
}

func idleTable(idle map[string]idleFigures, cpuSeconds float64) string {
	if len(idle) == 0 {
		return "" // -noidle
	}
	var b strings.Builder
	fmt.Fprintf(&b, "| transport | server RSS per idle connection (%d connections; yamux: per idle tunnel session, %d sessions) | server CPU with all of them idle (ms per s, over %g s) |\n|---|---|---|\n",
		idleConns, idleSessions, cpuSeconds)
	for _, k := range kinds {
		if v, ok := idle[k]; ok {
			fmt.Fprintf(&b, "| %s | %.1f KiB | %.1f |\n", k, v.RSSPerConn/1024, v.CPUPerSec)
		}
	}
	if v, ok := idle["yamux"]; ok {
		fmt.Fprintf(&b, "| yamux-4 | %.1f KiB per idle agent (4 sessions) | |\n", 4*v.RSSPerConn/1024)
	}
	return b.String()
}

// median returns the sample with the median QPS (its other figures come
// from the same run) and the QPS range.
func median(ss []sample) (sample, [2]float64) {
	if len(ss) == 0 {
		return sample{}, [2]float64{}
	}
	sort.Slice(ss, func(i, j int) bool { return ss[i].QPS < ss[j].QPS })
	var errs int64
	for _, s := range ss {
		errs += s.Errors
	}
	m := ss[len(ss)/2]
	m.Errors = errs
	return m, [2]float64{ss[0].QPS, ss[len(ss)-1].QPS}
}

func bytesName(n int) string {
	if n >= 1024 {
		return fmt.Sprintf("%d KiB", n/1024)
	}
	return fmt.Sprintf("%d B", n)
}
