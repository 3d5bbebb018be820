package testutil

import (
	"sync"

	"github.com/cloudwego/kitex/server"
)

// Runner runs a Kitex server and stops it through its exit signal. Kitex
// v0.16.3's Run panics (a nil error's Error) when Stop closes the listener
// before Run has gone past starting it, which a loaded machine makes
// possible even after calls succeeded; stopping through the exit signal
// lets Run stop the server itself, whenever it gets there.
type Runner struct {
	exit    chan error
	stopped chan struct{}
	once    sync.Once
	err     error
}

// NewRunner returns a Runner; pass its Option to the server's constructor.
func NewRunner() *Runner {
	return &Runner{exit: make(chan error, 1), stopped: make(chan struct{})}
}

// Option is the exit signal option the server must be built with.
func (r *Runner) Option() server.Option {
	return server.WithExitSignal(func() <-chan error { return r.exit })
}

// Run starts svr.Run in a goroutine.
func (r *Runner) Run(svr server.Server) {
	go func() {
		defer close(r.stopped)
		r.err = svr.Run()
	}()
}

// Stop tells Run to stop the server; it does not wait (see Stopped). It is
// safe to call more than once.
func (r *Runner) Stop() { r.once.Do(func() { r.exit <- nil }) }

// Stopped is closed when Run has returned.
func (r *Runner) Stopped() <-chan struct{} { return r.stopped }

// Err is what Run returned; call it once Stopped is closed.
func (r *Runner) Err() error { return r.err }
