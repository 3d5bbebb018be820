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
# Two tilt-dev modules are not in the checksum database (go.sum pins them); Tilt needs
# cgo (tree-sitter), so gcc must be installed.
export GONOSUMDB=github.com/tilt-dev GOFLAGS=-mod=mod

cd "$here"
go mod download github.com/tilt-dev/tilt
src=$(go list -m -f '{{.Dir}}' github.com/tilt-dev/tilt)
version=$(go list -m -f '{{.Version}}' github.com/tilt-dev/tilt)

# A fixed folder (not mktemp) keeps Go's build cache warm across builds.
work=${TMPDIR:-/tmp}/kitex-anyconn-tilt-$version
clean() { if [ -d "$work" ]; then chmod -R u+w "$work" && rm -rf "$work"; fi; }
clean
trap clean EXIT
mkdir -p "$work"
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
