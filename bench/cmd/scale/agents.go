package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// agentFigures are what one size of the agents part measured.
type agentFigures struct {
	Agents          int     `json:"agents"`
	Sessions        int     `json:"sessions_per_agent"`
	Processes       int     `json:"agent_processes"`
	Variant         string  `json:"variant,omitempty"` // a storm variant: what differs from the plain rows
	TLS             bool    `json:"tls"`
	DownS           float64 `json:"gateway_down_s"` // how long the gateway stayed down before its restart
	RSSPerAgent     float64 `json:"gateway_rss_bytes_per_agent"`
	HeapPerAgent    float64 `json:"gateway_heap_bytes_per_agent"`
	GatewayRSS      int64   `json:"gateway_rss_bytes"`
	IdleCPU         float64 `json:"gateway_idle_cpu_ms_per_s"`
	Cold            storm   `json:"cold_start"`
	Restart         storm   `json:"restart"`
	AgentsGaveUp    int     `json:"agents_gave_up"`
	AgentFailures   uint64  `json:"agent_failed_attempts"`
	AgentWarnLines  int     `json:"agent_warn_lines"`
	GatewayLogLines int     `json:"gateway_log_lines_restart"` // besides one per session connected or lost
	ConnectLines    int     `json:"gateway_connected_lines_restart"`
}

// storm is one start of the gateway with every agent (re)connecting.
type storm struct {
	AllAgentsS   float64 `json:"all_agents_s"`   // until every agent has a session
	AllSessionsS float64 `json:"all_sessions_s"` // until every session is there
	GatewayUpS   float64 `json:"gateway_up_s"`   // until the new gateway listened (restart only)
	Refused      uint64  `json:"handshakes_refused"`
	RefusalLines int     `json:"refusal_log_lines"`
	Accepted     uint64  `json:"sessions_accepted"`
	CallsOK      int64   `json:"calls_ok"`
	CallsFailed  int64   `json:"calls_failed_before_full_round"`
	FullRoundS   float64 `json:"full_round_s"` // until a round of calls where every agent answered
	TimedOut     bool    `json:"timed_out"`
}

// agentsConfig is the agents part's settings.
type agentsConfig struct {
	sessions        int
	perProcess      int
	backoffMin      time.Duration
	backoffMax      time.Duration
	maxHandshakes   int
	maxPerSource    int
	settle, idleCPU time.Duration
	timeout         time.Duration
	tls             bool          // the tunnel's TLS
	oneSource       bool          // every agent from 127.0.0.1
	restartDelay    time.Duration // how long the gateway stays down
	variant         string        // names a storm variant row
}

// refusalMsgs are the gateway's log messages of refused or failed handshakes.
var refusalMsgs = []string{"connection closed: too many handshakes", "agent refused"}

func (c agentsConfig) gatewayArgs(addr string, agents int, call bool) []string {
	args := []string{"gateway", "-addr", addr, "-agents", strconv.Itoa(agents), "-sessions", strconv.Itoa(c.sessions)}
	if call {
		args = append(args, "-call")
	}
	if c.maxHandshakes > 0 {
		args = append(args, "-max-handshakes", strconv.Itoa(c.maxHandshakes))
	}
	if c.maxPerSource > 0 {
		args = append(args, "-max-handshakes-per-source", strconv.Itoa(c.maxPerSource))
	}
	if c.tls {
		args = append(args, "-tls")
	}
	return args
}

// startGateway starts a gateway process and returns it with its stats URL.
func startGateway(self string, args []string) (*proc, string, error) {
	gw, err := startProc("gateway", self, args, nil, nil)
	if err != nil {
		return nil, "", err
	}
	gw.quiet = true
	line, err := gw.waitReady(30 * time.Second)
	if err != nil {
		gw.kill()
		return nil, "", err
	}
	f := strings.Fields(line)
	if len(f) != 2 {
		gw.kill()
		return nil, "", fmt.Errorf("gateway: ready line %q", line)
	}
	return gw, "http://" + f[1] + "/stats", nil
}

// measureAgents runs n agents against one gateway process: cold start,
// memory, then a SIGKILL of the gateway and its restart on the same port
// with a caller calling every agent in turn.
func measureAgents(self string, n int, c agentsConfig) (agentFigures, error) {
	f := agentFigures{Agents: n, Sessions: c.sessions, Variant: c.variant, TLS: c.tls, DownS: c.restartDelay.Seconds()}
	addr, err := freeAddr()
	if err != nil {
		return f, err
	}
	gw, statsURL, err := startGateway(self, c.gatewayArgs(addr, n, false))
	if err != nil {
		return f, err
	}
	defer func() {
		if gw != nil { // nil if the restart below failed
			gw.kill()
		}
	}()
	time.Sleep(c.settle / 2)
	var base gatewayStats
	if err := getJSON(statsURL+"?gc=1", &base); err != nil {
		return f, err
	}
	baseRSS := gw.rss()

	// Cold start: every agent process at once.
	var agents []*proc
	defer func() {
		for _, a := range agents {
			a.stop(5 * time.Second)
		}
	}()
	t0 := time.Now()
	for first := 0; first < n; first += c.perProcess {
		count := min(c.perProcess, n-first)
		args := []string{"agents", "-gateway", addr, "-first", strconv.Itoa(first), "-count", strconv.Itoa(count),
			"-sessions", strconv.Itoa(c.sessions)}
		if c.backoffMin > 0 {
			args = append(args, "-backoff-min", c.backoffMin.String())
		}
		if c.backoffMax > 0 {
			args = append(args, "-backoff-max", c.backoffMax.String())
		}
		if c.tls {
			args = append(args, "-tls")
		}
		if c.oneSource {
			args = append(args, "-one-source")
		}
		a, err := startProc(fmt.Sprintf("agents-%d", first), self, args, nil, nil)
		if err != nil {
			return f, err
		}
		agents = append(agents, a)
	}
	f.Processes = len(agents)
	for _, a := range agents {
		if _, err := a.waitReady(30 * time.Second); err != nil {
			return f, err
		}
	}
	st, err := waitStorm(statsURL, t0, c.timeout, false)
	f.Cold = st
	if err != nil {
		fmt.Fprintf(os.Stderr, "agents %5d: cold start: %v\n", n, err)
	}
	f.Cold.RefusalLines = gw.lines(refusalMsgs...)
	fmt.Fprintf(os.Stderr, "agents %5d: cold start, all agents in %.2fs, all sessions in %.2fs, %d handshakes refused\n",
		n, st.AllAgentsS, st.AllSessionsS, st.Refused)

	// Memory and idle CPU with every session up and no calls.
	time.Sleep(c.settle)
	var full gatewayStats
	if err := getJSON(statsURL+"?gc=1", &full); err != nil {
		return f, err
	}
	f.GatewayRSS = gw.rss()
	f.RSSPerAgent = float64(f.GatewayRSS-baseRSS) / float64(n)
	f.HeapPerAgent = (float64(full.HeapBytes) - float64(base.HeapBytes)) / float64(n)
	f.IdleCPU = cpuWindow(gw, c.idleCPU)

	// The storm: SIGKILL, then the gateway again on the same port, calling
	// every agent in turn from its first moment.
	t1 := time.Now()
	gw.kill()
	time.Sleep(c.restartDelay)
	gw, statsURL, err = startGateway(self, c.gatewayArgs(addr, n, true))
	if err != nil {
		return f, err
	}
	up := time.Since(t1).Seconds()
	st, err = waitStorm(statsURL, t1, c.timeout, true)
	st.GatewayUpS = up
	st.RefusalLines = gw.lines(refusalMsgs...)
	f.Restart = st
	f.ConnectLines = gw.lines("agent connected")
	for m, k := range gw.messages() {
		if !strings.Contains(m, "agent connected") && !strings.Contains(m, "agent disconnected") && !strings.Contains(m, "plaintext tunnel") {
			f.GatewayLogLines += k
		}
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "agents %5d: restart: %v\n", n, err)
	}
	fmt.Fprintf(os.Stderr, "agents %5d: restart, all agents in %.2fs, all sessions in %.2fs, %d refused (%d log lines), %d calls failed, full round at %.2fs\n",
		n, st.AllAgentsS, st.AllSessionsS, st.Refused, st.RefusalLines, st.CallsFailed, st.FullRoundS)

	for _, a := range agents {
		var s agentStats
		if err := a.ask("stats", &s); err != nil {
			return f, err
		}
		f.AgentsGaveUp += s.Closed
		f.AgentFailures += s.Failures
		for m, k := range a.messages() {
			if !strings.Contains(m, "plaintext tunnel") { // once per agent at its start
				f.AgentWarnLines += k
			}
		}
	}
	return f, nil
}

// waitStorm polls the gateway until every agent and session is back (and,
// with calls, a full round of calls succeeded), up to timeout after t0.
func waitStorm(statsURL string, t0 time.Time, timeout time.Duration, calls bool) (storm, error) {
	var s gatewayStats
	deadline := t0.Add(timeout)
	for {
		if err := getJSON(statsURL, &s); err != nil {
			return storm{}, err
		}
		if s.AllAgentsNs != 0 && s.AllSessionsNs != 0 && (!calls || s.FullRoundNs != 0) {
			break
		}
		if time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	since := func(ns int64) float64 {
		if ns == 0 {
			return -1
		}
		return time.Unix(0, ns).Sub(t0).Seconds()
	}
	st := storm{AllAgentsS: since(s.AllAgentsNs), AllSessionsS: since(s.AllSessionsNs), Refused: s.HandshakeFailures,
		Accepted: s.Accepted, CallsOK: s.CallsOK, CallsFailed: s.FailedBeforeRound, FullRoundS: since(s.FullRoundNs)}
	if s.AllAgentsNs == 0 || s.AllSessionsNs == 0 || (calls && s.FullRoundNs == 0) {
		st.TimedOut = true
		if calls && s.FullRoundNs == 0 {
			st.CallsFailed = s.CallsFailed
		}
		return st, fmt.Errorf("after %v: %d agents, %d sessions (full round: %v)", timeout, s.Agents, s.Sessions, s.FullRoundNs != 0)
	}
	return st, nil
}
