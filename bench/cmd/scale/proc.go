package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/anyconn/kitex-anyconn/bench/internal/sysinfo"
)

// proc is a child process: this program in another mode, or a service
// binary. Every line it writes (stdout and stderr) goes to onLine; a first
// stdout line "READY ..." is kept as its ready line.
type proc struct {
	name  string
	cmd   *exec.Cmd
	stdin io.WriteCloser
	ready chan string
	done  chan struct{}
	reply chan string // stdout lines starting with "STATS "

	mu    sync.Mutex
	msgs  map[string]int // lines by their JSON "msg" field ("" for other lines)
	quiet bool           // do not echo non-JSON stderr lines
}

// children are the processes started and not yet stopped: every exit path
// of the orchestrator kills them (no orphans on ports).
var (
	childrenMu sync.Mutex
	children   = map[*proc]bool{}
)

// lineHandler receives each line of a process, with the time it was read.
type lineHandler func(p *proc, line string, at time.Time)

// startProc starts path with args and env (added to this process's
// environment); onLine, if set, sees every output line.
func startProc(name, path string, args, env []string, onLine lineHandler) (*proc, error) {
	cmd := exec.Command(path, args...)
	cmd.Env = append(os.Environ(), env...)
	// Dies with the orchestrator, whatever ends it; its own process group
	// keeps a terminal's Ctrl-C for the orchestrator to pass on.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	p := &proc{name: name, cmd: cmd, stdin: stdin, ready: make(chan string, 1), done: make(chan struct{}),
		reply: make(chan string, 16), msgs: map[string]int{}}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", path, err)
	}
	childrenMu.Lock()
	children[p] = true
	childrenMu.Unlock()
	var wg sync.WaitGroup
	wg.Add(2)
	scan := func(r io.Reader, isStdout bool) {
		defer wg.Done()
		sc := bufio.NewScanner(r)
		sc.Buffer(make([]byte, 64<<10), 4<<20)
		first := true
		for sc.Scan() {
			line, at := sc.Text(), time.Now()
			if isStdout && first && strings.HasPrefix(line, "READY") {
				first = false
				p.ready <- strings.TrimSpace(strings.TrimPrefix(line, "READY"))
				continue
			}
			if isStdout && strings.HasPrefix(line, "STATS ") {
				select {
				case p.reply <- strings.TrimPrefix(line, "STATS "):
				default:
				}
				continue
			}
			p.count(line, isStdout)
			if onLine != nil {
				onLine(p, line, at)
			}
		}
		_, _ = io.Copy(io.Discard, r)
	}
	go scan(stdout, true)
	go scan(stderr, false)
	go func() {
		wg.Wait()
		_ = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// count files a line under its JSON "msg" field.
func (p *proc) count(line string, isStdout bool) {
	var l struct {
		Msg string `json:"msg"`
	}
	if json.Unmarshal([]byte(line), &l) != nil {
		l.Msg = ""
		if !isStdout && !p.quiet {
			fmt.Fprintf(os.Stderr, "%s | %s\n", p.name, line)
		}
	}
	p.mu.Lock()
	p.msgs[l.Msg]++
	p.mu.Unlock()
}

// lines returns how many lines p wrote whose msg contains one of subs.
func (p *proc) lines(subs ...string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for m, c := range p.msgs {
		for _, s := range subs {
			if strings.Contains(m, s) {
				n += c
				break
			}
		}
	}
	return n
}

// messages returns a copy of p's line counts by msg.
func (p *proc) messages() map[string]int {
	p.mu.Lock()
	defer p.mu.Unlock()
	m := make(map[string]int, len(p.msgs))
	for k, v := range p.msgs {
		m[k] = v
	}
	return m
}

// waitReady returns the rest of p's READY line.
func (p *proc) waitReady(timeout time.Duration) (string, error) {
	select {
	case l := <-p.ready:
		return l, nil
	case <-p.done:
		return "", fmt.Errorf("%s exited before it was ready (%v)", p.name, p.cmd.ProcessState)
	case <-time.After(timeout):
		return "", fmt.Errorf("%s not ready after %v", p.name, timeout)
	}
}

// send writes a line to p's standard input.
func (p *proc) send(line string) error {
	_, err := io.WriteString(p.stdin, line+"\n")
	return err
}

// ask sends a command and returns the STATS line it answers.
func (p *proc) ask(cmd string, into any) error {
	if err := p.send(cmd); err != nil {
		return err
	}
	select {
	case l := <-p.reply:
		return json.Unmarshal([]byte(l), into)
	case <-p.done:
		return fmt.Errorf("%s exited", p.name)
	case <-time.After(10 * time.Second):
		return fmt.Errorf("%s did not answer %q", p.name, cmd)
	}
}

// stop ends p: its standard input closes (this program's modes exit on
// that) and it gets SIGTERM (the services drain on it), then SIGKILL after
// grace.
func (p *proc) stop(grace time.Duration) {
	_ = p.stdin.Close()
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(grace):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
	p.forget()
}

// kill ends p at once with SIGKILL and waits for it.
func (p *proc) kill() {
	_ = p.cmd.Process.Kill()
	<-p.done
	p.forget()
}

func (p *proc) forget() {
	childrenMu.Lock()
	delete(children, p)
	childrenMu.Unlock()
}

// killAll kills every child still running.
func killAll() {
	childrenMu.Lock()
	ps := make([]*proc, 0, len(children))
	for p := range children {
		ps = append(ps, p)
	}
	childrenMu.Unlock()
	for _, p := range ps {
		p.kill()
	}
}

// cpu returns p's CPU time (user and system) so far.
func (p *proc) cpu() time.Duration { return procCPU(p.cmd.Process.Pid) }

// rss returns p's resident set size in bytes.
func (p *proc) rss() int64 { return sysinfo.RSS(p.cmd.Process.Pid) }

// procCPU returns the CPU time of process pid: the sum of its threads'
// se.sum_exec_runtime (/proc/<pid>/task/*/sched, the scheduler's own count
// in ns; /proc's ticks of 10 ms are too coarse for an idle process, and
// another process's CPU-time clock does not advance for Go processes on
// this kernel), or from /proc/<pid>/stat if those files are missing.
func procCPU(pid int) time.Duration {
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/sched", pid))
	var sum float64
	found := false
	for _, t := range tasks {
		b, err := os.ReadFile(t)
		if err != nil {
			continue
		}
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, "se.sum_exec_runtime") {
				f := strings.Fields(l)
				if v, err := strconv.ParseFloat(f[len(f)-1], 64); err == nil {
					sum += v // ms
					found = true
				}
				break
			}
		}
	}
	if found {
		return time.Duration(sum * float64(time.Millisecond))
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * 10 * time.Millisecond // USER_HZ is 100 on Linux
}

// getJSON reads url's JSON answer into v.
func getJSON(url string, v any) error {
	c := http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", url, resp.Status)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

// cpuWindow returns p's CPU time per second over d, in ms.
func cpuWindow(p *proc, d time.Duration) float64 {
	before, t := p.cpu(), time.Now()
	time.Sleep(d)
	return float64((p.cpu() - before).Microseconds()) / 1e3 / time.Since(t).Seconds()
}

// raiseFileLimit raises this process's soft limit of open files to its hard
// limit (children inherit it) and returns the new limit.
func raiseFileLimit() uint64 {
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		return 0
	}
	if l.Cur < l.Max {
		l.Cur = l.Max
		_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &l)
	}
	_ = syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l)
	return l.Cur
}
