// Command scale measures how the costs of kitex-anyconn grow with size, in
// separate processes on loopback (`make bench-scale`, under 10 minutes;
// -quick for a short run):
//
//   - agents: 10, 100 and 1,000 tunnel agents (several per process, each
//     with its own sessions and its own loopback source address) on one
//     gateway process: the gateway's memory per agent, the time until all
//     are connected from a cold start and after the gateway is killed
//     (SIGKILL) and started again on the same port, the handshakes refused
//     on the way and the calls that failed meanwhile (the restarted gateway
//     calls every agent in turn from its first moment);
//   - instances: 10, 100 and 1,000 echo registrations in etcd (made by
//     internal/etcdreg's Registry, each its own loopback address, all
//     served by one real echo listening on 0.0.0.0) and one real caller
//     (bin/caller): its CPU per second at its default call rate, its etcd
//     requests per second (etcd's own gRPC metrics), and the time from a
//     registration or a deregistration to the first call that shows it;
//   - connections: 100, 1,000 and 10,000 idle connections per transport
//     (yamux: idle tunnel sessions): server memory per connection and CPU
//     while idle.
//
// It writes bench/results/scale.md, scale.json and scale.svg. The program
// starts itself again for its child processes (the first argument names
// the mode: gateway, agents or conns).
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/anyconn/kitex-anyconn/bench/internal/sysinfo"
	"github.com/anyconn/kitex-anyconn/internal/config"
	"github.com/anyconn/kitex-anyconn/internal/etcdembed"
	"github.com/anyconn/kitex-anyconn/transport"
	"github.com/anyconn/kitex-anyconn/transport/tunnel"
)

// report is what a run measured; the JSON file holds it whole.
type report struct {
	Name      string            `json:"name"`
	Machine   string            `json:"machine"`
	Date      string            `json:"date"`
	Command   string            `json:"command"`
	WallS     float64           `json:"wall_s"`
	FileLimit uint64            `json:"open_files_limit"`
	Settings  map[string]string `json:"settings"`
	Agents    []agentFigures    `json:"agents"`
	Instances []instanceFigures `json:"instances"`
	Conns     []connFigures     `json:"connections"`
	Errors    []string          `json:"errors,omitempty"`
}

func main() {
	if len(os.Args) > 1 {
		modes := map[string]func([]string) error{"gateway": runGateway, "agents": runAgents, "conns": runConns}
		if run, ok := modes[os.Args[1]]; ok {
			if err := run(os.Args[2:]); err != nil {
				fmt.Fprintln(os.Stderr, os.Args[1]+":", err)
				os.Exit(1)
			}
			return
		}
	}
	quick := flag.Bool("quick", false, "smaller sizes and windows (about 2 min)")
	parts := flag.String("parts", "agents,instances,conns", "the parts to run")
	agentSizes := flag.String("agents", "", "agent counts (10,100,1000; quick 10,100)")
	instanceSizes := flag.String("instances", "", "registration counts (10,100,1000; quick 10,100)")
	connSizes := flag.String("conns", "", "idle connections per transport (100,1000,10000; quick 100,1000)")
	kinds := flag.String("kinds", "netpoll,gonet,websocket,yamux", "transports of the connections part")
	sessions := flag.Int("sessions", 4, "tunnel sessions per agent (the services' TUNNEL_SESSIONS default)")
	perProcess := flag.Int("per-process", 200, "agents per agents process")
	backoffMin := flag.Duration("backoff-min", 0, "agents' BackoffMin (the library's default if 0)")
	backoffMax := flag.Duration("backoff-max", 0, "agents' BackoffMax (the library's default if 0)")
	maxHS := flag.Int("max-handshakes", 0, "gateway's MaxHandshakes (the library's default if 0)")
	maxHSSource := flag.Int("max-handshakes-per-source", 0, "gateway's MaxHandshakesPerSource (the library's default if 0)")
	withTLS := flag.Bool("tls", false, "the agents part over the tunnel's TLS")
	restartDelay := flag.Duration("restart-delay", 0, "how long the killed gateway stays down before it starts again")
	storms := flag.String("storms", "", "storm variants run again at the largest agent count: tls, down (gateway down 5 s before its restart), onesource (every agent from 127.0.0.1, as behind one NAT); full run: tls,down,onesource")
	bin := flag.String("bin", "bin", "folder of the echo and caller binaries (make build)")
	kind := flag.String("kind", "netpoll", "transport of echo and caller in the instances part")
	trials := flag.Int("trials", 0, "registration/deregistration trials per size (5; quick 2)")
	out := flag.String("out", "bench/results", "folder for the results")
	name := flag.String("name", "", "results' base name (scale; quick: scale-quick)")
	render := flag.String("render", "", "measure nothing: write the Markdown table and the chart again from this JSON result, next to it")
	flag.Parse()
	if *render != "" {
		var r report
		b, err := os.ReadFile(*render)
		if err == nil {
			err = json.Unmarshal(b, &r)
		}
		if err == nil {
			err = write(r, filepath.Dir(*render))
		}
		if err != nil {
			fail(fmt.Errorf("%s: %w", *render, err))
		}
		return
	}

	stopOnSignal()
	start := time.Now()
	self, err := os.Executable()
	if err != nil {
		fail(err)
	}
	r := report{Name: "scale", Machine: sysinfo.Machine(), Date: time.Now().UTC().Format(time.RFC3339),
		Command: strings.Join(append([]string{"go run ./bench/cmd/scale"}, os.Args[1:]...), " "), FileLimit: raiseFileLimit()}
	ac := agentsConfig{sessions: *sessions, perProcess: *perProcess, backoffMin: *backoffMin, backoffMax: *backoffMax,
		maxHandshakes: *maxHS, maxPerSource: *maxHSSource, tls: *withTLS, restartDelay: *restartDelay, settle: 2 * time.Second, idleCPU: tunnel.DefaultKeepAliveInterval, timeout: 60 * time.Second}
	// The caller's etcd requests are read over a whole period of its full
	// reads (DISCOVERY_REFRESH, which the caller inherits, or its default),
	// from 10 s to 30 s.
	refresh := config.DefaultDiscoveryRefresh
	if d, err := time.ParseDuration(os.Getenv("DISCOVERY_REFRESH")); err == nil && d > 0 {
		refresh = d
	}
	ic := instancesConfig{bin: *bin, kind: transport.Kind(*kind), window: min(max(10*time.Second, refresh), 30*time.Second),
		trials: 5, interval: 10 * time.Millisecond}
	cc := connsConfig{settle: 1500 * time.Millisecond, idleCPU: 3 * time.Second, sessionCPU: tunnel.DefaultKeepAliveInterval, timeout: 60 * time.Second}
	as, is, cs := []int{10, 100, 1000}, []int{10, 100, 1000}, []int{100, 1000, 10000}
	variants := "tls,down,onesource"
	if *quick {
		variants = ""
		r.Name = "scale-quick"
		as, is, cs = []int{10, 100}, []int{10, 100}, []int{100, 1000}
		ac.settle, ac.idleCPU = time.Second, 2*time.Second
		ic.window, ic.trials = 4*time.Second, 2
		cc.settle, cc.idleCPU, cc.sessionCPU = time.Second, time.Second, 2*time.Second
	}
	if *name != "" {
		r.Name = *name
	}
	if flagSet("storms") {
		variants = *storms
	}
	if *trials > 0 {
		ic.trials = *trials
	}
	as, is, cs = sizes(*agentSizes, as), sizes(*instanceSizes, is), sizes(*connSizes, cs)
	r.Settings = map[string]string{
		"sessions_per_agent":        strconv.Itoa(ac.sessions),
		"agents_per_process":        strconv.Itoa(ac.perProcess),
		"backoff_min":               orDefault(*backoffMin, tunnel.DefaultBackoffMin),
		"backoff_max":               orDefault(*backoffMax, tunnel.DefaultBackoffMax),
		"max_handshakes":            orDefaultInt(*maxHS, tunnel.DefaultMaxHandshakes),
		"max_handshakes_per_source": orDefaultInt(*maxHSSource, tunnel.DefaultMaxHandshakesPerSource),
		"instances_transport":       *kind,
		"tunnel_tls":                strconv.FormatBool(*withTLS),
		"gateway_down":              restartDelay.String(),
		"discovery_refresh":         envOr("DISCOVERY_REFRESH", "(caller default)"),
		"fast_caller_interval":      ic.interval.String(),
	}
	want := map[string]bool{}
	for _, p := range strings.Split(*parts, ",") {
		want[strings.TrimSpace(p)] = true
	}
	if want["agents"] {
		for _, n := range as {
			f, err := measureAgents(self, n, ac)
			if err != nil {
				r.Errors = append(r.Errors, fmt.Sprintf("agents %d: %v", n, err))
				fmt.Fprintln(os.Stderr, "scale: agents", n, err)
			}
			r.Agents = append(r.Agents, f)
		}
		for _, v := range strings.Split(variants, ",") {
			vc := ac
			vc.idleCPU = time.Second // the rows above have the idle figures
			switch strings.TrimSpace(v) {
			case "":
				continue
			case "tls":
				vc.tls, vc.variant = true, "tunnel TLS"
			case "down":
				vc.restartDelay, vc.variant = 5*time.Second, "gateway down 5 s"
			case "onesource":
				vc.oneSource, vc.variant = true, "one source address"
			default:
				fail(fmt.Errorf("storm variant %q: want tls, down or onesource", v))
			}
			n := as[len(as)-1]
			f, err := measureAgents(self, n, vc)
			if err != nil {
				r.Errors = append(r.Errors, fmt.Sprintf("agents %d (%s): %v", n, vc.variant, err))
				fmt.Fprintln(os.Stderr, "scale: agents", n, vc.variant, err)
			}
			r.Agents = append(r.Agents, f)
		}
	}
	if want["instances"] {
		fs, err := instancesPart(is, ic)
		if err != nil {
			r.Errors = append(r.Errors, fmt.Sprintf("instances: %v", err))
			fmt.Fprintln(os.Stderr, "scale: instances:", err)
		}
		r.Instances = fs
	}
	if want["conns"] {
		for _, k := range strings.Split(*kinds, ",") {
			for _, n := range cs {
				f, err := measureConns(self, k, n, cc)
				if err != nil {
					r.Errors = append(r.Errors, fmt.Sprintf("connections %s %d: %v", k, n, err))
					fmt.Fprintln(os.Stderr, "scale: connections", k, n, err)
				}
				r.Conns = append(r.Conns, f)
			}
		}
	}
	killAll()
	r.WallS = time.Since(start).Seconds()
	if err := write(r, *out); err != nil {
		fail(err)
	}
	fmt.Fprintf(os.Stderr, "scale: done in %.0f s\n", r.WallS)
}

// write writes r's Markdown, JSON and chart into dir.
func write(r report, dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	md := markdown(r)
	fmt.Print(md)
	if err := os.WriteFile(filepath.Join(dir, r.Name+".md"), []byte(md), 0o644); err != nil {
		return err
	}
	js, _ := json.MarshalIndent(r, "", "  ")
	if err := os.WriteFile(filepath.Join(dir, r.Name+".json"), append(js, '\n'), 0o644); err != nil {
		return err
	}
	return chart(r, filepath.Join(dir, r.Name+".svg"))
}

// flagSet says whether the flag name was given.
func flagSet(name string) bool {
	set := false
	flag.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

func sizes(s string, def []int) []int {
	if s == "" {
		return def
	}
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n <= 0 {
			fail(fmt.Errorf("size %q: want a positive number", f))
		}
		out = append(out, n)
	}
	return out
}

func orDefault(v, def time.Duration) string {
	if v > 0 {
		return v.String()
	}
	return def.String() + " (default)"
}

func orDefaultInt(v, def int) string {
	if v > 0 {
		return strconv.Itoa(v)
	}
	return strconv.Itoa(def) + " (default)"
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

func freeAddr() (string, error) { return etcdembed.FreeAddr() }

// stopOnSignal kills every child and exits on SIGINT or SIGTERM.
func stopOnSignal() {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		s := <-ch
		killAll()
		fmt.Fprintln(os.Stderr, "scale: stopped by", s)
		os.Exit(1)
	}()
}

func fail(err error) {
	killAll()
	fmt.Fprintln(os.Stderr, "scale:", err)
	os.Exit(1)
}
