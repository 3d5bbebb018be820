package ratelog_test

import (
	"log/slog"
	"testing"
	"time"

	"github.com/anyconn/kitex-anyconn/internal/testutil"
	"github.com/anyconn/kitex-anyconn/transport/internal/ratelog"
)

func TestMain(m *testing.M) { testutil.VerifyTestMain(m) }

// repeated returns the lines that summarise n held events.
func repeated(logs *testutil.Logs, n uint64) []testutil.Record {
	var out []testutil.Record
	for _, r := range logs.All() {
		if v, ok := r.Attrs["repeated"]; ok && v.Uint64() == n {
			out = append(out, r)
		}
	}
	return out
}

func TestSampling(t *testing.T) {
	log, logs := testutil.NewLogs(slog.LevelWarn)
	l := ratelog.New(log, 100*time.Millisecond)
	defer l.Close()

	// A flood of one kind: the first in full, then one summary per interval.
	for i := 0; i < 10_000; i++ {
		l.Warn("refused", "connection refused", slog.Int("n", i))
	}
	l.Warn("other", "another kind")
	if got := logs.Len(); got != 2 {
		t.Fatalf("%d lines right after 10,001 events of two kinds; want 2 (one per kind)", got)
	}
	testutil.Eventually(t, "a summary of the 9,999 held events", 5*time.Second, func() bool { return len(repeated(logs, 9_999)) > 0 })
	sum := repeated(logs, 9_999)[0]
	if sum.Message != "connection refused" || sum.Attrs["n"].Int64() != 9_999 {
		t.Fatalf("summary %q %v; want the message and the newest event's attributes", sum.Message, sum.Attrs)
	}
	// The quiet kind logs nothing more; after a quiet interval a kind is
	// logged in full again.
	time.Sleep(250 * time.Millisecond)
	before := logs.Len()
	l.Warn("refused", "connection refused", slog.Int("n", -1))
	if all := logs.All(); len(all) != before+1 || all[before].Attrs["n"].Int64() != -1 {
		t.Fatalf("after a quiet interval the event was not logged in full: %v", all[before:])
	}
}

func TestCloseReportsHeld(t *testing.T) {
	log, logs := testutil.NewLogs(slog.LevelWarn)
	l := ratelog.New(log, time.Hour)
	l.Warn("k", "m")
	l.Warn("k", "m")
	l.Warn("k", "m")
	l.Close()
	l.Warn("k", "m") // dropped
	if logs.Len() != 2 || len(repeated(logs, 2)) != 1 {
		t.Fatalf("lines %v; want the first event and a summary of 2", logs.All())
	}
	var nilLogger *ratelog.Logger
	nilLogger.Warn("k", "m") // no panic
	nilLogger.Close()
}
