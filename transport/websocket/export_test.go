package websocket

// XNetFraming returns cfg with x/net's own framing instead of the lean one,
// for the tests and the framing benchmark.
func XNetFraming(cfg ListenerConfig) ListenerConfig { cfg.xnetFraming = true; return cfg }

// XNetDialer returns cfg with x/net's own framing instead of the lean one.
func XNetDialer(cfg DialerConfig) DialerConfig { cfg.xnetFraming = true; return cfg }
