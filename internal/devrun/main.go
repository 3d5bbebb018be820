// Command devrun is what `make run` starts: an embedded etcd, one echo and
// one caller (the binaries built into -bin), with their output in this
// terminal. The environment is passed to both services, so
// `TRANSPORT=websocket make run` picks the transport (with TRANSPORT=yamux a
// random tunnel token is made up unless TUNNEL_TOKEN is set). If ETCD_ENDPOINTS is
// set, that etcd is used and none is embedded. Ctrl-C stops everything.
package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/anyconn/kitex-anyconn/internal/etcdembed"
)

func main() {
	bin := flag.String("bin", "bin", "folder holding the echo and caller binaries")
	flag.Parse()
	os.Exit(run(*bin))
}

func run(bin string) int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	env := os.Environ()
	if os.Getenv("ETCD_ENDPOINTS") == "" {
		dir, err := os.MkdirTemp("", "kitex-anyconn-etcd-")
		if err != nil {
			fmt.Fprintln(os.Stderr, "devrun:", err)
			return 1
		}
		defer os.RemoveAll(dir)
		etcd, err := etcdembed.Start(dir, "127.0.0.1:2379")
		if err != nil {
			fmt.Fprintln(os.Stderr, "devrun:", err, "(is port 2379 in use? set ETCD_ENDPOINTS to use that etcd)")
			return 1
		}
		defer etcd.Close()
		fmt.Fprintf(os.Stderr, "devrun: embedded etcd at %s\n", etcd.Endpoint())
		env = append(env, "ETCD_ENDPOINTS="+etcd.Endpoint())
	}
	env = withDefault(env, "DRAIN_DELAY", "1s")
	if os.Getenv("TUNNEL_TOKEN") == "" && os.Getenv("TUNNEL_TOKEN_FILE") == "" {
		// A fresh tunnel token per run: the two local services share it.
		var b [16]byte
		_, _ = rand.Read(b[:])
		env = append(env, "TUNNEL_TOKEN="+hex.EncodeToString(b[:]))
	}
	env = withDefault(withDefault(env, "TUNNEL_LISTEN_ADDR", "127.0.0.1:7000"), "TUNNEL_ADVERTISE_ADDR", "127.0.0.1:7000")
	echoEnv := withDefault(withDefault(env, "LISTEN_ADDR", "127.0.0.1:8888"), "ADVERTISE_ADDR", "127.0.0.1:8888")

	children := []*child{
		{name: "echo  ", path: filepath.Join(bin, "echo"), env: echoEnv},
		{name: "caller", path: filepath.Join(bin, "caller"), env: env},
	}
	exited := make(chan *child, len(children))
	for i, c := range children {
		if err := c.start(exited); err != nil {
			fmt.Fprintln(os.Stderr, "devrun:", err)
			stopAll(children)
			return 1
		}
		if i == 0 && !strings.EqualFold(os.Getenv("TRANSPORT"), "yamux") {
			// Let echo register before the caller's first call (with yamux
			// echo is ready only once the caller's gateway exists).
			waitReady(ctx, "http://127.0.0.1"+echoAdminPort(echoEnv)+"/readyz", 10*time.Second)
		}
	}
	code := 0
	select {
	case <-ctx.Done():
		fmt.Fprintln(os.Stderr, "devrun: stopping")
	case c := <-exited:
		// The child's own code: `CALL_COUNT=5 make run` ends with the caller's verdict.
		code = c.exitCode()
		fmt.Fprintf(os.Stderr, "devrun: %s exited with code %d; stopping\n", c.name, code)
	}
	stopAll(children)
	return code
}

// echoAdminPort returns ":<port>" of echo's ADMIN_ADDR (":9090" by default).
func echoAdminPort(env []string) string {
	addr := ":9090"
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "ADMIN_ADDR="); ok {
			addr = v
		}
	}
	if i := strings.LastIndex(addr, ":"); i >= 0 {
		return addr[i:]
	}
	return ":9090"
}

// waitReady polls url until it answers 200, ctx ends or timeout passes.
func waitReady(ctx context.Context, url string, timeout time.Duration) {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func withDefault(env []string, key, value string) []string {
	if os.Getenv(key) != "" {
		return env
	}
	return append(env, key+"="+value)
}

type child struct {
	name string
	path string
	env  []string
	cmd  *exec.Cmd
	out  sync.WaitGroup
	done chan struct{}
}

func (c *child) start(exited chan<- *child) error {
	c.cmd = exec.Command(c.path)
	c.cmd.Env = c.env
	// Its own process group: Ctrl-C reaches the children through devrun,
	// in order, not all at once.
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stdout, err := c.cmd.StdoutPipe()
	if err != nil {
		return err
	}
	stderr, err := c.cmd.StderrPipe()
	if err != nil {
		return err
	}
	if err := c.cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w (run `make build` first)", c.path, err)
	}
	c.done = make(chan struct{})
	c.out.Add(2)
	go c.copy(os.Stdout, stdout)
	go c.copy(os.Stderr, stderr)
	go func() {
		c.out.Wait()
		_ = c.cmd.Wait()
		close(c.done)
		exited <- c
	}()
	return nil
}

func (c *child) copy(w io.Writer, r io.Reader) {
	defer c.out.Done()
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		fmt.Fprintf(w, "%s | %s\n", c.name, sc.Text())
	}
	// A line too long for the scanner: pass the rest through unprefixed,
	// so that the child never blocks on a full pipe.
	_, _ = io.Copy(w, r)
}

func (c *child) exitCode() int {
	if c.cmd.ProcessState != nil && c.cmd.ProcessState.ExitCode() >= 0 {
		return c.cmd.ProcessState.ExitCode()
	}
	return 1 // killed by a signal
}

// stopAll stops the caller first, then echo (which drains), each with SIGTERM
// and, after 15 s, SIGKILL.
func stopAll(children []*child) {
	for i := len(children) - 1; i >= 0; i-- {
		c := children[i]
		if c.done == nil {
			continue
		}
		_ = c.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-c.done:
		case <-time.After(15 * time.Second):
			_ = c.cmd.Process.Kill()
			<-c.done
		}
	}
}
