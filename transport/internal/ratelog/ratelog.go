// Package ratelog logs events that a peer can repeat at will (refused
// connections, failed handshakes) without letting it flood the log: the
// first event of a kind is logged at once and in full; further events of
// that kind are only counted, and one summary line per interval reports how
// many there were (with the attributes of the last one). A kind that stays
// quiet for a whole interval is forgotten, so its next event is logged in
// full again.
package ratelog

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// DefaultInterval is the summary interval of New when every is zero.
const DefaultInterval = 10 * time.Second

// Logger samples warnings by kind. A nil *Logger discards everything.
type Logger struct {
	log   *slog.Logger
	every time.Duration

	mu     sync.Mutex
	kinds  map[string]*kind
	closed bool
}

type kind struct {
	msg   string
	held  uint64      // events counted since the last line
	last  []slog.Attr // attributes of the newest counted event
	timer *time.Timer
}

// New returns a Logger writing to log, summarising every interval
// (DefaultInterval if zero).
func New(log *slog.Logger, every time.Duration) *Logger {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if every <= 0 {
		every = DefaultInterval
	}
	return &Logger{log: log, every: every, kinds: make(map[string]*kind)}
}

// Warn records one event of kind key. The first event of a kind (or the
// first after a quiet interval) is logged at once as msg with attrs; the
// others are counted and reported by one summary line, msg with the attributes
// "repeated" (how many), "interval" and the newest event's attributes, at the
// end of each interval that had any.
func (l *Logger) Warn(key, msg string, attrs ...slog.Attr) {
	if l == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return
	}
	if k := l.kinds[key]; k != nil {
		k.held++
		k.msg, k.last = msg, attrs
		return
	}
	l.log.LogAttrs(context.Background(), slog.LevelWarn, msg, attrs...)
	k := &kind{msg: msg}
	l.kinds[key] = k
	k.timer = time.AfterFunc(l.every, func() { l.tick(key, k) })
}

// tick ends an interval of one kind: it reports the events counted in it,
// or forgets the kind if there were none.
func (l *Logger) tick(key string, k *kind) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed || l.kinds[key] != k {
		return
	}
	if k.held == 0 {
		delete(l.kinds, key)
		return
	}
	l.summary(k)
	k.timer.Reset(l.every)
}

func (l *Logger) summary(k *kind) {
	attrs := append([]slog.Attr{slog.Uint64("repeated", k.held), slog.Duration("interval", l.every)}, k.last...)
	l.log.LogAttrs(context.Background(), slog.LevelWarn, k.msg, attrs...)
	k.held, k.last = 0, nil
}

// Close stops the timers and logs the events still counted. Later events
// are dropped.
func (l *Logger) Close() {
	if l == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return
	}
	l.closed = true
	for key, k := range l.kinds {
		k.timer.Stop()
		if k.held > 0 {
			l.summary(k)
		}
		delete(l.kinds, key)
	}
}
