#!/bin/sh
# Build the pinned Prometheus server (tools/prometheus/go.mod) into $1, for the kind
# e2e. Static (CGO off, netgo), stripped, version stamped as Prometheus' own release
# builds do (.promu.yml), with the module's version and date for revision and build date.
# Build tags: no `builtinassets` (the web UI's assets are not in the module: the UI
# answers 404 and the HTTP API works), and `remove_all_sd enable_kubernetes_sd`: of the
# service discovery plugins only Kubernetes (with file and http, always in) is compiled.
set -eu
out=$1
cd "$(dirname "$0")"
mod=github.com/prometheus/prometheus
dir=$(go list -m -f '{{.Dir}}' $mod)
version=$(cat "$dir/VERSION")
revision=$(go list -m -f '{{.Version}}' $mod)
date=$(go list -m -f '{{.Time.UTC.Format "20060102-15:04:05"}}' $mod)
v=github.com/prometheus/common/version
CGO_ENABLED=0 go build -trimpath -tags netgo,remove_all_sd,enable_kubernetes_sd -ldflags "-s -w \
	-X $v.Version=$version -X $v.Revision=$revision -X $v.Branch=HEAD \
	-X $v.BuildUser=kitex-anyconn@tools/prometheus -X $v.BuildDate=$date" \
	-o "$out" $mod/cmd/prometheus
