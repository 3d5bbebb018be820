// Package testutil holds helpers shared by the project's tests.
package testutil

import "go.uber.org/goleak"

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
