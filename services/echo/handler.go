package main

import (
	"context"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/anyconn/kitex-anyconn/kitex_gen/api"
)

// echoHandler implements api.Echo: it returns the message it got.
type echoHandler struct {
	requests prometheus.Counter
}

var _ api.Echo = (*echoHandler)(nil)

func (h *echoHandler) Echo(_ context.Context, req *api.Request) (*api.Response, error) {
	h.requests.Inc()
	return &api.Response{Message: req.GetMessage()}, nil
}
