// Package apptest holds what the services' wiring tests share.
package apptest

import (
	"maps"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/anyconn/kitex-anyconn/internal/app"
	"github.com/anyconn/kitex-anyconn/internal/config"
	"github.com/anyconn/kitex-anyconn/internal/testutil/etcdtest"
	"github.com/anyconn/kitex-anyconn/transport"
)

// Token is a valid tunnel token for tests.
const Token = "0123456789abcdefghijklmnopqrstuv"

// Lookup reads variables from env, then from defaults.
func Lookup(defaults, env map[string]string) config.LookupFunc {
	all := maps.Clone(defaults)
	maps.Copy(all, env)
	return func(k string) (string, bool) { v, ok := all[k]; return v, ok }
}

// Runtime is what app.Main gives a service: log, a metrics registry and a
// client of the etcd at endpoint (none if endpoint is empty).
func Runtime(t *testing.T, endpoint string, log *zap.Logger) *app.Runtime {
	rt := &app.Runtime{Log: log, Metrics: prometheus.NewRegistry()}
	if endpoint != "" {
		rt.Etcd = etcdtest.Client(t, endpoint)
	}
	return rt
}

// EveryKind fails t unless table has one entry for each transport.Kinds().
func EveryKind[V any](t *testing.T, what string, table map[transport.Kind]V) {
	t.Helper()
	for _, k := range transport.Kinds() {
		if _, ok := table[k]; !ok {
			t.Errorf("no %s for transport %s", what, k)
		}
	}
	if len(table) != len(transport.Kinds()) {
		t.Errorf("%d %ss for %d transports", len(table), what, len(transport.Kinds()))
	}
}
