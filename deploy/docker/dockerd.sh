#!/bin/sh
# Make sure a Docker engine answers on this machine, starting one if needed.
#
# With a working `docker info` it does nothing, unless this machine's capability
# bounding set lacks some capability (CapBnd in /proc/self/status; some sandboxes drop
# CAP_SYS_RESOURCE) and the engine has no "wrapped" runtime: then `--privileged`
# containers (kind's nodes) cannot start, so, as root, it restarts a dockerd that it
# can manage (a plain process, not systemd's) as described below.
#
# Otherwise, on Debian or Ubuntu and as root, it installs Debian's docker.io package
# (once) and starts dockerd in the background, logging to /var/log/kitex-anyconn-dockerd.log.
# On a machine that lacks capabilities it first installs the runc wrapper
# (deploy/kind/runc-wrapper, built with Go) to /usr/local/lib/kitex-anyconn/runc-wrapper
# and starts dockerd with `--add-runtime wrapped=<it> --default-runtime wrapped`, so one
# engine serves plain image builds and kind. Restarting dockerd keeps images; running
# containers stop. Idempotent: run it as often as you like. On a laptop with Docker
# Desktop or a running engine it is a no-op.
set -eu

repo=$(cd "$(dirname "$0")/../.." && pwd)
wrapper=/usr/local/lib/kitex-anyconn/runc-wrapper
log=/var/log/kitex-anyconn-dockerd.log

# needs_wrapper: true when this machine's bounding set lacks a capability that a
# privileged container asks for (bits 0..40, CAP_CHOWN..CAP_CHECKPOINT_RESTORE).
needs_wrapper() {
	[ -r /proc/self/status ] || return 1
	bnd=$(sed -n 's/^CapBnd:[[:space:]]*//p' /proc/self/status)
	[ -n "$bnd" ] || return 1
	# 0x1ffffffffff: all 41 capabilities up to CAP_CHECKPOINT_RESTORE.
	[ $((0x$bnd & 0x1ffffffffff)) -ne $((0x1ffffffffff)) ]
}

has_wrapped_runtime() {
	docker info --format '{{range $name, $_ := .Runtimes}}{{$name}} {{end}}' 2>/dev/null | tr ' ' '\n' | grep -qx wrapped
}

# install_wrapper builds the wrapper from this checkout and installs it if it changed.
install_wrapper() {
	if command -v go >/dev/null 2>&1 && [ -f "$repo/deploy/kind/runc-wrapper/main.go" ]; then
		tmp=$(mktemp)
		if (cd "$repo" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$tmp" ./deploy/kind/runc-wrapper); then
			if ! cmp -s "$tmp" "$wrapper" 2>/dev/null; then
				echo "dockerd.sh: installing the runc wrapper to $wrapper" >&2
				mkdir -p "$(dirname "$wrapper")"
				install -m 0755 "$tmp" "$wrapper.new" && mv -f "$wrapper.new" "$wrapper"
			fi
			rm -f "$tmp"
			return 0
		fi
		rm -f "$tmp"
	fi
	if [ -x "$wrapper" ]; then
		return 0
	fi
	echo "dockerd.sh: cannot build the runc wrapper (needs Go and this checkout)" >&2
	return 1
}

wrap=false
if needs_wrapper; then
	wrap=true
fi

if docker info >/dev/null 2>&1; then
	if ! $wrap || has_wrapped_runtime; then
		exit 0
	fi
	# The engine answers but cannot run privileged containers here: restart it with
	# the wrapper, if it is ours to restart.
	pid=$(pgrep -xo dockerd || true)
	if [ "$(id -u)" != 0 ] || [ -z "$pid" ] || { command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet docker 2>/dev/null; }; then
		echo "dockerd.sh: this engine has no \"wrapped\" runtime and this machine lacks capabilities, so kind's" >&2
		echo "  privileged containers will fail; start dockerd with --add-runtime wrapped=$wrapper --default-runtime wrapped" >&2
		exit 0
	fi
	install_wrapper
	echo "dockerd.sh: restarting dockerd (pid $pid) with the runc wrapper as its default runtime" >&2
	kill -TERM "$pid"
	i=0
	while kill -0 "$pid" 2>/dev/null; do
		i=$((i + 1))
		if [ "$i" -gt 60 ]; then
			echo "dockerd.sh: dockerd (pid $pid) did not stop within 30 s" >&2
			exit 1
		fi
		sleep 0.5
	done
fi

if ! command -v dockerd >/dev/null 2>&1; then
	if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
		echo "dockerd.sh: no Docker engine answers and I can only install one as root on Debian; start Docker and retry" >&2
		exit 1
	fi
	echo "dockerd.sh: installing Debian's docker.io" >&2
	apt-get update -qq >/dev/null
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io >/dev/null
fi

if [ "$(id -u)" != 0 ]; then
	echo "dockerd.sh: dockerd is installed but not running; start it (sudo dockerd &) and retry" >&2
	exit 1
fi

if ! pgrep -x dockerd >/dev/null 2>&1; then
	if $wrap; then
		install_wrapper
		echo "dockerd.sh: starting dockerd with the runc wrapper (log: $log)" >&2
		nohup dockerd --add-runtime "wrapped=$wrapper" --default-runtime wrapped >>"$log" 2>&1 </dev/null 3>&- 4>&- 5>&- 6>&- 7>&- 8>&- 9>&- &
	else
		echo "dockerd.sh: starting dockerd (log: $log)" >&2
		nohup dockerd >>"$log" 2>&1 </dev/null 3>&- 4>&- 5>&- 6>&- 7>&- 8>&- 9>&- &
	fi
fi

# Wait up to 60 s for the engine to answer.
i=0
while ! docker info >/dev/null 2>&1; do
	i=$((i + 1))
	if [ "$i" -gt 120 ]; then
		echo "dockerd.sh: dockerd did not answer within 60 s; see $log" >&2
		tail -n 20 "$log" >&2 || true
		exit 1
	fi
	sleep 0.5
done
