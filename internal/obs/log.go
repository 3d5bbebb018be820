// Package obs is the services' observability: the zap logger (with Kitex's
// own logs routed into it), Prometheus metrics, and the admin HTTP server
// with /healthz, /readyz and /metrics.
package obs

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/cloudwego/kitex/pkg/klog"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// NewLogger returns a zap logger writing to w at level ("debug", "info",
// "warn", "error") in format ("json" or "console"). JSON lines carry the
// fields ts, level, logger, msg and the call's own fields.
func NewLogger(w io.Writer, level, format string) (*zap.Logger, error) {
	lvl, err := zapcore.ParseLevel(level)
	if err != nil {
		return nil, fmt.Errorf("log level %q: %w", level, err)
	}
	enc := zap.NewProductionEncoderConfig()
	enc.TimeKey = "ts"
	enc.EncodeTime = zapcore.ISO8601TimeEncoder
	enc.EncodeDuration = zapcore.StringDurationEncoder
	var encoder zapcore.Encoder
	switch format {
	case "json":
		encoder = zapcore.NewJSONEncoder(enc)
	case "console":
		enc.EncodeLevel = zapcore.CapitalColorLevelEncoder
		encoder = zapcore.NewConsoleEncoder(enc)
	default:
		return nil, fmt.Errorf("log format %q: want json or console", format)
	}
	core := zapcore.NewCore(encoder, zapcore.Lock(zapcore.AddSync(w)), lvl)
	return zap.New(core, zap.ErrorOutput(zapcore.Lock(os.Stderr))), nil
}

// RouteKitexLogs sends Kitex's own logs (klog) to l, under the name "kitex".
func RouteKitexLogs(l *zap.Logger) {
	klog.SetLogger(&kitexLogger{s: l.Named("kitex").WithOptions(zap.AddCallerSkip(2)).Sugar()})
}

// kitexLogger adapts zap to klog.FullLogger. Kitex's Trace and Notice have
// no zap level: they become Debug and Info.
type kitexLogger struct {
	s *zap.SugaredLogger
}

var _ klog.FullLogger = (*kitexLogger)(nil)

func (k *kitexLogger) logf(level klog.Level, format string, v ...interface{}) {
	msg := fmt.Sprintf(format, v...)
	k.log(level, msg)
}

func (k *kitexLogger) log(level klog.Level, msg string) {
	switch level {
	case klog.LevelTrace, klog.LevelDebug:
		k.s.Debug(msg)
	case klog.LevelInfo, klog.LevelNotice:
		k.s.Info(msg)
	case klog.LevelWarn:
		k.s.Warn(msg)
	case klog.LevelError:
		k.s.Error(msg)
	default: // Fatal: Kitex expects the process to end.
		k.s.Fatal(msg)
	}
}

func (k *kitexLogger) Trace(v ...interface{})  { k.log(klog.LevelTrace, fmt.Sprint(v...)) }
func (k *kitexLogger) Debug(v ...interface{})  { k.log(klog.LevelDebug, fmt.Sprint(v...)) }
func (k *kitexLogger) Info(v ...interface{})   { k.log(klog.LevelInfo, fmt.Sprint(v...)) }
func (k *kitexLogger) Notice(v ...interface{}) { k.log(klog.LevelNotice, fmt.Sprint(v...)) }
func (k *kitexLogger) Warn(v ...interface{})   { k.log(klog.LevelWarn, fmt.Sprint(v...)) }
func (k *kitexLogger) Error(v ...interface{})  { k.log(klog.LevelError, fmt.Sprint(v...)) }
func (k *kitexLogger) Fatal(v ...interface{})  { k.log(klog.LevelFatal, fmt.Sprint(v...)) }

func (k *kitexLogger) Tracef(f string, v ...interface{})  { k.logf(klog.LevelTrace, f, v...) }
func (k *kitexLogger) Debugf(f string, v ...interface{})  { k.logf(klog.LevelDebug, f, v...) }
func (k *kitexLogger) Infof(f string, v ...interface{})   { k.logf(klog.LevelInfo, f, v...) }
func (k *kitexLogger) Noticef(f string, v ...interface{}) { k.logf(klog.LevelNotice, f, v...) }
func (k *kitexLogger) Warnf(f string, v ...interface{})   { k.logf(klog.LevelWarn, f, v...) }
func (k *kitexLogger) Errorf(f string, v ...interface{})  { k.logf(klog.LevelError, f, v...) }
func (k *kitexLogger) Fatalf(f string, v ...interface{})  { k.logf(klog.LevelFatal, f, v...) }

// The Ctx methods add the trace_id and span_id of the call ctx belongs to
// (TraceFields): Kitex passes the call's ctx, and so does klog.CtxInfof in
// a handler.
func (k *kitexLogger) ctxf(ctx context.Context, level klog.Level, f string, v ...interface{}) {
	if fields := TraceFields(ctx); fields != nil {
		(&kitexLogger{s: k.s.Desugar().With(fields...).Sugar()}).logf(level, f, v...)
		return
	}
	k.logf(level, f, v...)
}

func (k *kitexLogger) CtxTracef(ctx context.Context, f string, v ...interface{}) {
	k.ctxf(ctx, klog.LevelTrace, f, v...)
}
func (k *kitexLogger) CtxDebugf(ctx context.Context, f string, v ...interface{}) {
	k.ctxf(ctx, klog.LevelDebug, f, v...)
}
func (k *kitexLogger) CtxInfof(ctx context.Context, f string, v ...interface{}) {
	k.ctxf(ctx, klog.LevelInfo, f, v...)
}
func (k *kitexLogger) CtxNoticef(ctx context.Context, f string, v ...interface{}) {
	k.ctxf(ctx, klog.LevelNotice, f, v...)
}
func (k *kitexLogger) CtxWarnf(ctx context.Context, f string, v ...interface{}) {
	k.ctxf(ctx, klog.LevelWarn, f, v...)
}
func (k *kitexLogger) CtxErrorf(ctx context.Context, f string, v ...interface{}) {
	k.ctxf(ctx, klog.LevelError, f, v...)
}
func (k *kitexLogger) CtxFatalf(ctx context.Context, f string, v ...interface{}) {
	k.ctxf(ctx, klog.LevelFatal, f, v...)
}

// SetLevel is ignored: the zap logger's level applies.
func (k *kitexLogger) SetLevel(klog.Level) {}

// SetOutput is ignored: the zap logger's output applies.
func (k *kitexLogger) SetOutput(io.Writer) {}

// MaxPeerText bounds the peer-controlled text that one log field carries.
const MaxPeerText = 512

// PeerError is zap.Error for an error whose text a peer controls, such as
// a remote exception's message: at most MaxPeerText bytes of it, cut on a
// character boundary, with its full length when cut.
func PeerError(err error) zap.Field {
	s := err.Error()
	if len(s) <= MaxPeerText {
		return zap.String("error", s)
	}
	return zap.String("error", fmt.Sprintf("%s… (%d bytes)", strings.ToValidUTF8(s[:MaxPeerText], ""), len(s)))
}
