package obs

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

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

// A peer's text in a log line is cut to MaxPeerText bytes, on a character
// boundary, with its length.
func TestPeerErrorIsBounded(t *testing.T) {
	short := errors.New("biz error: no")
	if f := PeerError(short); f.String != short.Error() {
		t.Fatalf("short error: %q", f.String)
	}
	long := errors.New("biz error: " + strings.Repeat("é", 1<<20))
	f := PeerError(long)
	if len(f.String) > MaxPeerText+32 || !utf8.ValidString(f.String) || !strings.HasSuffix(f.String, fmt.Sprintf("(%d bytes)", len(long.Error()))) {
		t.Fatalf("a 2 MiB error logged as %d bytes: %.80q…", len(f.String), f.String)
	}
}
