package ratelog_test

import (
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/anyconn/kitex-anyconn/internal/ratelog"
	"github.com/anyconn/kitex-anyconn/internal/testutil"
)

func TestMain(m *testing.M) { testutil.VerifyTestMain(m) }

func TestSampling(t *testing.T) {
	core, logs := observer.New(zapcore.WarnLevel)
	l := ratelog.New(zap.New(core), 100*time.Millisecond)
	defer l.Close()

	// A flood of one kind: the first in full, then one summary per interval.
	for i := 0; i < 10_000; i++ {
		l.Warn("refused", "connection refused", zap.Int("n", i))
	}
	l.Warn("other", "another kind")
	if got := logs.Len(); got != 2 {
		t.Fatalf("%d lines right after 10,001 events of two kinds; want 2 (one per kind)", got)
	}
	deadline := time.Now().Add(5 * time.Second)
	for logs.FilterField(zap.Uint64("repeated", 9_999)).Len() == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("no summary of the 9,999 held events: %v", logs.All())
		}
		time.Sleep(10 * time.Millisecond)
	}
	sum := logs.FilterField(zap.Uint64("repeated", 9_999)).All()[0]
	if sum.Message != "connection refused" || sum.ContextMap()["n"] != int64(9_999) {
		t.Fatalf("summary %q %v; want the message and the newest event's fields", sum.Message, sum.ContextMap())
	}
	// The quiet kind logs nothing more; after a quiet interval a kind is
	// logged in full again.
	time.Sleep(250 * time.Millisecond)
	before := logs.Len()
	l.Warn("refused", "connection refused", zap.Int("n", -1))
	if logs.Len() != before+1 || logs.All()[before].ContextMap()["n"] != int64(-1) {
		t.Fatalf("after a quiet interval the event was not logged in full: %v", logs.All()[before:])
	}
}

func TestCloseReportsHeld(t *testing.T) {
	core, logs := observer.New(zapcore.WarnLevel)
	l := ratelog.New(zap.New(core), time.Hour)
	l.Warn("k", "m")
	l.Warn("k", "m")
	l.Warn("k", "m")
	l.Close()
	l.Warn("k", "m") // dropped
	if logs.Len() != 2 || logs.FilterField(zap.Uint64("repeated", 2)).Len() != 1 {
		t.Fatalf("lines %v; want the first event and a summary of 2", logs.All())
	}
	var nilLogger *ratelog.Logger
	nilLogger.Warn("k", "m") // no panic
	nilLogger.Close()
}
