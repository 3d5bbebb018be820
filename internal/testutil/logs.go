package testutil

import (
	"context"
	"log/slog"
	"strings"
	"sync"
)

// Logs records what a *slog.Logger writes, for tests that count or read
// log lines. Its methods are safe for concurrent use.
type Logs struct {
	level slog.Level
	mu    *sync.Mutex
	recs  *[]Record
	attrs []slog.Attr
}

// Record is one logged line: its level, message and attributes (those of
// the logger's With first), by key.
type Record struct {
	Level   slog.Level
	Message string
	Attrs   map[string]slog.Value
}

// NewLogs returns a Logger that records lines at level and above, and the
// record.
func NewLogs(level slog.Level) (*slog.Logger, *Logs) {
	l := &Logs{level: level, mu: new(sync.Mutex), recs: new([]Record)}
	return slog.New(l), l
}

// All returns the lines recorded so far.
func (l *Logs) All() []Record {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]Record(nil), (*l.recs)...)
}

// Len returns how many lines were recorded.
func (l *Logs) Len() int { return len(l.All()) }

// Containing returns the lines whose message contains s.
func (l *Logs) Containing(s string) []Record {
	var out []Record
	for _, r := range l.All() {
		if strings.Contains(r.Message, s) {
			out = append(out, r)
		}
	}
	return out
}

// Enabled implements slog.Handler.
func (l *Logs) Enabled(_ context.Context, level slog.Level) bool { return level >= l.level }

// Handle implements slog.Handler.
func (l *Logs) Handle(_ context.Context, r slog.Record) error {
	rec := Record{Level: r.Level, Message: r.Message, Attrs: map[string]slog.Value{}}
	for _, a := range l.attrs {
		rec.Attrs[a.Key] = a.Value.Resolve()
	}
	r.Attrs(func(a slog.Attr) bool {
		rec.Attrs[a.Key] = a.Value.Resolve()
		return true
	})
	l.mu.Lock()
	defer l.mu.Unlock()
	*l.recs = append(*l.recs, rec)
	return nil
}

// WithAttrs implements slog.Handler.
func (l *Logs) WithAttrs(attrs []slog.Attr) slog.Handler {
	c := *l
	c.attrs = append(append([]slog.Attr(nil), l.attrs...), attrs...)
	return &c
}

// WithGroup implements slog.Handler; groups are flattened.
func (l *Logs) WithGroup(string) slog.Handler { return l }
