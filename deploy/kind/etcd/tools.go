//go:build tools

// Package etcd pins the etcd server that deploy/kind/cluster.sh builds.
package etcd

import _ "go.etcd.io/etcd/server/v3"
