#!/bin/sh
# Build the pinned Traefik ingress controller (tools/traefik/go.mod) into $1, for the
# kind e2e. Static (CGO off), stripped, with Traefik's version stamped as its release
# builds do. The web UI is a placeholder in Traefik's module: the controller does not
# need it. About 8 minutes and 3.5 GB of memory on a cold cache; 178 MB.
set -eu
out=$1
cd "$(dirname "$0")"
version=$(go list -m -f '{{.Version}}' github.com/traefik/traefik/v3)
CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X github.com/traefik/traefik/v3/pkg/version.Version=${version#v}" \
	-o "$out" github.com/traefik/traefik/v3/cmd/traefik
