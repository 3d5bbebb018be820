#!/bin/sh
# Build the pinned Tilt (tools/tilt/go.mod) into $1.
#
# Tilt's web UI is built with yarn and is not in its Go module, and `tilt ci` and
# `tilt up` refuse to start without it. This build copies the module to a scratch
# folder, adds a one-page placeholder UI, and builds from the copy. The terminal UI,
# `tilt ci`, and `tilt alpha tiltfile-result` work fully; a laptop with Tilt installed
# from tilt.dev gets the real web UI from that install instead.
set -eu
out=$1
here=$(cd "$(dirname "$0")" && pwd)
export GONOSUMDB=github.com/tilt-dev GOFLAGS=-mod=mod

cd "$here"
go mod download github.com/tilt-dev/tilt
src=$(go list -m -f '{{.Dir}}' github.com/tilt-dev/tilt)
version=$(go list -m -f '{{.Version}}' github.com/tilt-dev/tilt)

work=$(mktemp -d)
trap 'chmod -R u+w "$work"; rm -rf "$work"' EXIT
cp -R "$src" "$work/tilt"
chmod -R u+w "$work/tilt"
cat >"$work/tilt/pkg/assets/build/index.html" <<'HTML'
<!doctype html><title>Tilt</title><p>This Tilt was built from source without its web UI.
Follow the resources in the terminal (<code>tilt up --stream</code>) or install Tilt from tilt.dev for the web UI.
HTML

mkdir "$work/mod"
cp go.mod go.sum "$work/mod/"
cd "$work/mod"
go mod edit -replace "github.com/tilt-dev/tilt=$work/tilt"
go build -trimpath -ldflags "-s -w -X main.version=${version#v}" -o "$out" github.com/tilt-dev/tilt/cmd/tilt
