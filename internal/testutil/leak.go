// Package testutil holds helpers shared by the project's tests.
package testutil

import (
	"fmt"
	"os"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// LeakOptions returns the goleak options every test package uses: they
// ignore only goroutines that Kitex and netpoll start once per process and
// keep for its lifetime (worker pools, tickers, pollers, the balancer
// cache). Goroutines of this project are always checked.
func LeakOptions() []goleak.Option {
	return []goleak.Option{
		goleak.IgnoreTopFunction("github.com/cloudwego/kitex/client.(*timeoutPool).createWorker.func1"),
		goleak.IgnoreTopFunction("github.com/cloudwego/kitex/client.(*timeoutPool).createTicker.func1"),
		goleak.IgnoreTopFunction("github.com/cloudwego/kitex/pkg/loadbalance/lbcache.(*BalancerFactory).watcher"),
		goleak.IgnoreTopFunction("github.com/cloudwego/kitex/pkg/utils.(*SharedTicker).Tick"),
		goleak.IgnoreAnyFunction("github.com/cloudwego/netpoll.(*defaultPoll).Wait"),
		// Kitex's default exit signal: one goroutine per server waiting for SIGTERM.
		goleak.IgnoreAnyFunction("github.com/cloudwego/kitex/internal/server.DefaultSysExitSignal.func1"),
	}
}

// VerifyTestMain runs the tests and then fails the run if goroutines are
// left, with LeakOptions. It gives goroutines that are on their way out up
// to 10 s to finish (goleak alone waits about 2 s, which a loaded 2-core
// machine can exceed); a real leak stays and fails.
func VerifyTestMain(m *testing.M) {
	code := m.Run()
	if code == 0 {
		var err error
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
			if err = goleak.Find(LeakOptions()...); err == nil || time.Now().After(deadline) {
				break
			}
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "goleak: goroutines left after the tests passed:", err)
			code = 1
		}
	}
	os.Exit(code)
}
