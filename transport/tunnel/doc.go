// Package tunnel carries Kitex RPC over a yamux reverse tunnel: a server that
// cannot accept connections (behind NAT or a firewall, in another cluster)
// runs an Agent that dials out to a Gateway on the client side, and the two
// prove to each other that they hold the same secret token before the agent
// is called over streams of that one connection.
//
// On the client side the Gateway is an ordinary Kitex dependency: its
// Resolver lists every live agent as an instance (address = the agent's
// identity), its Balancer spreads calls over the agents connected right now,
// and its Dialer opens a yamux stream to the chosen agent, so timeouts,
// retries and load balancing work as on any other transport. A call can
// target one agent with callopt.WithHostPort(identity). On the server side
// the Agent is a net.Listener for server.WithListener.
//
// # Handshake (protocol version 4)
//
// The token never crosses the wire. Each side proves it knows it with an
// HMAC-SHA256 over a transcript of fresh random nonces from both sides, so
// a recorded handshake is worth nothing later, and the gateway proves
// itself first, so an agent that dialed an impostor reveals nothing usable
// and accepts no stream from it:
//
//	agent → gateway  "KXTN" | 4 | len | identity | len | address dialed | agent nonce (32)
//	gateway → agent  2 | gateway nonce (32) | len | gateway name | p | p × (len | peer name)
//	                 | n | n × HMAC(key_i, "KXTN4 gateway" | T)
//	                 (or 1 | len | reason: refused)
//	agent → gateway  i | slot | instance (16) | HMAC(key_i, "KXTN4 agent" | T | i | slot | instance)
//	                 (or 255: declined, the agent holds its sessions to this gateway already)
//	gateway → agent  0 | 0 (accepted) or 1 | len | reason (refused)
//
// T is the transcript: identity, address, both nonces, the gateway's name
// and peers and, over TLS,
// 32 bytes of keying material exported from the TLS session (RFC 5705,
// label "EXPORTER-kitex-anyconn-tunnel"), which binds the proofs to that
// TLS session: a man in the middle that terminates TLS on each side gets
// proofs that fail on the other. The keys are the tokens the gateway
// accepts for the identity (its per-agent tokens if it has any, else the
// shared ones; two during a rotation), and the agent answers with the one
// it holds. The agent sends the address it dialed, so a gateway that knows
// its own addresses (GatewayConfig.Addresses) refuses a handshake relayed
// to it by an address that is not its own. The instance is random per
// Agent: it tells a restarted agent (another instance) from a reconnection.
//
// Other versions are refused with a reason the old agent logs (versions 1
// and 2 sent the token in clear; version 3 had no gateway names); a
// gateway older than version 3 closes the connection after the hello,
// which the agent reports as such. Upgrade gateways and agents together.
//
// An agent may keep several sessions to one gateway (AgentConfig.Sessions),
// numbered by their slot. A new session in a slot replaces the one the
// gateway had in it.
//
// # Several gateways behind one address
//
// Each gateway names itself (GatewayConfig.Name) and the gateways it knows
// of (Gateway.SetPeers) in its challenge. An agent that reaches gateways
// through one shared address (a Service, a load balancer, an ingress)
// cannot choose where a connection lands, so it dials the address again
// until it holds its sessions to every gateway named, declining those it
// holds already before it proves anything. Without names, it probes the
// address every AgentConfig.ProbeInterval for gateways it does not know.
//
// # Streams
//
// Streams are opened by the gateway, one per Kitex connection. An agent
// opens at most two, each starting with one byte: 'W' right after its
// handshake, on which the gateway writes its name and peers again at every
// change (a 2-byte length, then the challenge's encoding), and 'L' when it
// starts leaving (besides yamux's GoAway), so that the gateway stops
// choosing it and stops reusing the streams it pooled. Any other stream an
// agent opens closes its session.
//
// # Carriers
//
// The session runs on TCP, on TLS over TCP, or on a WebSocket connection
// (an address of scheme ws:// or wss://, see AgentConfig.WebSocket and
// Gateway.Serve), with the tunnel's own TLS inside it when configured: a
// proxy or ingress that terminates wss:// then sees only ciphertext.
package tunnel
