package main

import (
	"fmt"
	"math"
	"sort"
	"strings"
)

// stormGoal is issue 20's bound on the reconnect storm: every agent back
// within it after a gateway restart.
const stormGoal = 15.0

func markdown(r report) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# Scaling (%s)\n\n", r.Name)
	fmt.Fprintf(&b, "Machine: %s. Date: %s. Wall time: %.0f s. Open files limit: %d per process. Command: `%s`.\n\n",
		r.Machine, r.Date, r.WallS, r.FileLimit, r.Command)
	keys := make([]string, 0, len(r.Settings))
	for k := range r.Settings {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	b.WriteString("Settings:")
	for i, k := range keys {
		sep := ","
		if i == len(keys)-1 {
			sep = "."
		}
		fmt.Fprintf(&b, " %s %s%s", k, r.Settings[k], sep)
	}
	b.WriteString("\n\n")
	summary(&b, r)
	if len(r.Agents) > 0 {
		agentsTable(&b, r.Agents)
	}
	if len(r.Instances) > 0 {
		instancesTable(&b, r.Instances)
	}
	if len(r.Conns) > 0 {
		connsTable(&b, r.Conns)
	}
	if len(r.Errors) > 0 {
		b.WriteString("## Errors\n\n")
		for _, e := range r.Errors {
			fmt.Fprintf(&b, "- %s\n", e)
		}
		b.WriteString("\n")
	}
	return b.String()
}

func secs(s float64) string {
	if s < 0 {
		return "never"
	}
	return fmt.Sprintf("%.2f", s)
}

func agentsTable(b *strings.Builder, fs []agentFigures) {
	b.WriteString("## Agents on one gateway\n\n")
	b.WriteString("Each agent has its own identity, sessions and loopback source address (127.10.x.y, so that the gateway's per-source handshake limit sees a fleet, not one host); " +
		"several agents share a process and one Kitex echo server. Cold start: the gateway is up, every agent process starts at once. " +
		"Restart: the gateway process gets SIGKILL and starts again on the same port (at once, or after 5 s down in the variant so named), calling every agent in turn from its first moment (one call every 2 ms); " +
		"times count from the kill. Refused: handshakes the gateway refused or that failed (its counter); log lines: its refusal lines (sampled).\n\n")
	b.WriteString("| agents | variant | sessions each | gateway RSS per agent | gateway heap per agent | gateway idle CPU (ms/s) | cold: all agents (s) | cold: all sessions (s) | cold: refused (log lines) | restart: all agents (s) | restart: all sessions (s) | restart: refused (log lines) | calls failed before a full round | full round (s) | agents gave up | agents' failed attempts (their warning lines) |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, f := range fs {
		v, idle := f.Variant, "-" // the variants' idle CPU is not read over a keep-alive interval
		if v == "" {
			v, idle = "plain", fmt.Sprintf("%.2f", f.IdleCPU)
		}
		fmt.Fprintf(b, "| %d | %s | %d | %.1f KiB | %.1f KiB | %s | %s | %s | %d (%d) | %s | %s | %d (%d) | %d of %d | %s | %d | %d (%d) |\n",
			f.Agents, v, f.Sessions, f.RSSPerAgent/1024, f.HeapPerAgent/1024, idle,
			secs(f.Cold.AllAgentsS), secs(f.Cold.AllSessionsS), f.Cold.Refused, f.Cold.RefusalLines,
			secs(f.Restart.AllAgentsS), secs(f.Restart.AllSessionsS), f.Restart.Refused, f.Restart.RefusalLines,
			f.Restart.CallsFailed, f.Restart.CallsFailed+f.Restart.CallsOK, secs(f.Restart.FullRoundS), f.AgentsGaveUp,
			f.AgentFailures, f.AgentWarnLines)
	}
	b.WriteString("\n")
	for _, f := range fs {
		if f.Agents < 1000 {
			continue
		}
		back := f.Restart.AllSessionsS
		verdict := "met"
		if back < 0 || back > stormGoal || f.Restart.TimedOut {
			verdict = "not met"
		}
		v := ""
		if f.Variant != "" {
			v = " (" + f.Variant + ")"
		}
		fmt.Fprintf(b, "Reconnect storm, %d agents%s: every session back %s s after the kill, %s s after the new gateway listened (goal %.0f s: %s); %d handshakes refused, %d refusal log lines (%d gateway log lines in all, besides its %d info lines, one per session connected); %d agents gave up; %d calls failed before the first full round of calls.\n\n",
			f.Agents, v, secs(back), secs(back-f.Restart.GatewayUpS), stormGoal, verdict, f.Restart.Refused, f.Restart.RefusalLines, f.GatewayLogLines, f.ConnectLines, f.AgentsGaveUp, f.Restart.CallsFailed)
	}
}

func instancesTable(b *strings.Builder, fs []instanceFigures) {
	b.WriteString("## Instances in etcd\n\n")
	b.WriteString("Registrations written by internal/etcdreg's Registry (same key and JSON, own lease each), each with its own loopback address 127.20.x.y:port, all served by one real echo listening on 0.0.0.0; " +
		"one real caller (bin/caller) at its default call rate for CPU and etcd requests (etcd's own gRPC counters, every method but the registrations' LeaseKeepAlive); " +
		"a second one calling every 10 ms for the delays: a probe registration with 99 % of the weight is added (time to the first call that reaches it) and removed (time to the first call after the last one that reached it).\n\n")
	b.WriteString("| instances | caller CPU (ms/s) | caller RSS | etcd requests/s (caller) | by method | registration → call (ms, median [max]) | deregistration → call (ms, median [max]) | fast caller's calls failed |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|\n")
	for _, f := range fs {
		var methods []string
		for m, v := range f.EtcdByMethod {
			methods = append(methods, fmt.Sprintf("%s %.2f", m, v))
		}
		sort.Strings(methods)
		fmt.Fprintf(b, "| %d | %.2f | %.1f MiB | %.2f | %s | %s | %s | %d of %d |\n",
			f.Instances, f.CallerCPU, float64(f.CallerRSS)/(1<<20), f.EtcdReqPerSec, strings.Join(methods, ", "),
			medMax(f.RegisterMs), medMax(f.DeregisterMs), f.CallsFailed, f.CallsFailed+f.CallsOK)
	}
	b.WriteString("\n")
}

func medMax(v []float64) string {
	if len(v) == 0 {
		return "-"
	}
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	return fmt.Sprintf("%.0f [%.0f]", s[len(s)/2], s[len(s)-1])
}

func connsTable(b *strings.Builder, fs []connFigures) {
	b.WriteString("## Idle connections\n\n")
	b.WriteString("A server process per transport and size (yamux: an agents process, where echo runs, with that many agents of one session each, on a gateway process); " +
		"the client opens the connections (WebSocket: handshakes, no pings), waits, and reads the server's RSS (against before) and CPU while they idle.\n\n")
	b.WriteString("| transport | connections | opened | server RSS per connection | server idle CPU (ms/s) | open time (s) | gateway RSS per session | stopped by |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|\n")
	for _, f := range fs {
		gw := ""
		if f.GatewayRSS != 0 {
			gw = fmt.Sprintf("%.1f KiB", f.GatewayRSS/1024)
		}
		fmt.Fprintf(b, "| %s | %d | %d | %.1f KiB | %.2f | %.2f | %s | %s |\n",
			f.Kind, f.Conns, f.Open, f.RSSPerConn/1024, f.IdleCPU, f.OpenS, gw, f.Error)
	}
	b.WriteString("\n")
}

// summary says, per part, the cost per unit at the smallest and largest
// size and how it grows.
func summary(b *strings.Builder, r report) {
	b.WriteString("## How cost grows\n\n")
	b.WriteString("Per unit at the smallest and the largest size; flat means within 30 %, so that the total grows linearly with the size.\n\n")
	var plain []agentFigures
	for _, f := range r.Agents {
		if f.Variant == "" {
			plain = append(plain, f)
		}
	}
	if len(plain) > 1 {
		a, z := plain[0], plain[len(plain)-1]
		fmt.Fprintf(b, "- Gateway memory per agent (%d sessions each): %.0f KiB RSS, %.0f KiB heap at %d agents; %.0f KiB RSS, %.0f KiB heap at %d (%s). Idle gateway CPU: %.2f ms/s at %d agents, %.2f at %d (keep-alives: %.1f µs/s per agent).\n",
			a.Sessions, a.RSSPerAgent/1024, a.HeapPerAgent/1024, a.Agents, z.RSSPerAgent/1024, z.HeapPerAgent/1024, z.Agents,
			growth(a.RSSPerAgent, z.RSSPerAgent), a.IdleCPU, a.Agents, z.IdleCPU, z.Agents, 1000*z.IdleCPU/float64(z.Agents))
		fmt.Fprintf(b, "- Reconnect after a gateway restart: every session back in %s s with %d agents, %s s with %d (from the kill).\n",
			secs(a.Restart.AllSessionsS), a.Agents, secs(z.Restart.AllSessionsS), z.Agents)
	}
	if n := len(r.Instances); n > 1 {
		a, z := r.Instances[0], r.Instances[n-1]
		fmt.Fprintf(b, "- Caller with %d instances: %.2f ms CPU/s, %.2f etcd requests/s; with %d: %.2f ms CPU/s (%s), %.2f requests/s. Registration seen by a call in %s ms (median) with %d, %s ms with %d.\n",
			a.Instances, a.CallerCPU, a.EtcdReqPerSec, z.Instances, z.CallerCPU, growth(a.CallerCPU, z.CallerCPU), z.EtcdReqPerSec,
			medMax(a.RegisterMs), a.Instances, medMax(z.RegisterMs), z.Instances)
	}
	byKind := map[string][]connFigures{}
	var kinds []string
	for _, f := range r.Conns {
		if f.Open == 0 {
			continue
		}
		if byKind[f.Kind] == nil {
			kinds = append(kinds, f.Kind)
		}
		byKind[f.Kind] = append(byKind[f.Kind], f)
	}
	for _, k := range kinds {
		fs := byKind[k]
		a, z := fs[0], fs[len(fs)-1]
		what := "connection"
		if k == "yamux" {
			what = "session (agent side)"
		}
		fmt.Fprintf(b, "- %s: %.1f KiB per idle %s at %d, %.1f KiB at %d (%s); idle CPU %.2f ms/s at %d.\n",
			k, a.RSSPerConn/1024, what, a.Open, z.RSSPerConn/1024, z.Open, growth(a.RSSPerConn, z.RSSPerConn), z.IdleCPU, z.Open)
	}
	b.WriteString("\n")
}

// growth says how a per-unit cost changes from the smallest to the
// largest size: flat (within 30 %), or by what factor.
func growth(small, large float64) string {
	if small <= 0 || math.IsNaN(small) || math.IsNaN(large) {
		return "n/a"
	}
	r := large / small
	if r > 0.7 && r < 1.3 {
		return "flat"
	}
	return fmt.Sprintf("x%.1f", r)
}
