//go:build tools

// Package coredns pins the CoreDNS server that deploy/kind/cluster.sh builds.
package coredns

import _ "github.com/coredns/coredns"
