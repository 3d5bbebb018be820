package obs

import (
	"errors"
	"log/slog"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// The transports' slog lines reach zap with their level, message and typed
// fields, errors as zap writes them, and zap's level filters them.
func TestSlogWritesThroughZap(t *testing.T) {
	core, logs := observer.New(zapcore.InfoLevel)
	log := Slog(zap.New(core)).With(slog.String("agent", "a1"))
	log.Debug("dropped below info")
	log.Warn("refused", slog.Int("status", 403), slog.Duration("in", time.Second), slog.Any("error", errors.New("boom")),
		slog.Group("peer", slog.String("addr", "10.0.0.1:7000")))
	if logs.Len() != 1 {
		t.Fatalf("%d lines, want 1 (debug filtered by zap's level): %v", logs.Len(), logs.All())
	}
	e := logs.All()[0]
	m := e.ContextMap()
	if e.Level != zapcore.WarnLevel || e.Message != "refused" || m["agent"] != "a1" || m["status"] != int64(403) ||
		m["in"] != time.Second || m["error"] != "boom" || m["peer.addr"] != "10.0.0.1:7000" {
		t.Fatalf("line %v %q %v", e.Level, e.Message, m)
	}
}
