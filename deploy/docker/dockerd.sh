#!/bin/sh
# Make sure a Docker engine answers on this machine, starting one if needed.
#
# With a working `docker info` it does nothing. Otherwise, on Debian or Ubuntu and as
# root, it installs Debian's docker.io package (once) and starts dockerd in the
# background, logging to /var/log/kitex-anyconn-dockerd.log. Idempotent: run it as
# often as you like. On a laptop with Docker Desktop or a running engine it is a no-op.
set -eu

if docker info >/dev/null 2>&1; then
	exit 0
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

log=/var/log/kitex-anyconn-dockerd.log
if ! pgrep -x dockerd >/dev/null 2>&1; then
	echo "dockerd.sh: starting dockerd (log: $log)" >&2
	nohup dockerd >"$log" 2>&1 &
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
