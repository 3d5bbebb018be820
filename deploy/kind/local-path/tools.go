//go:build tools

// Package localpath pins the local-path-provisioner that deploy/kind/cluster.sh builds.
package localpath

import _ "github.com/rancher/local-path-provisioner"
