#!/usr/bin/env bash
# Offline kind cluster for kitex-anyconn's end-to-end tests (issue #6, `make e2e-kind`).
#
#   deploy/kind/cluster.sh up          ensure docker (with the runc wrapper runtime where the
#                                      host lacks capabilities), the node image, the cluster
#                                      "kitex-anyconn"; wait until the node and CoreDNS are Ready
#   deploy/kind/cluster.sh down        delete the cluster
#   deploy/kind/cluster.sh node-image  only build (or find) the node image and print its name
#
# No container registry is needed: when kindest/node:v1.34.x is neither local nor
# pullable, the node image is built here (Linux, root) from the Go module proxy
# (Kubernetes, etcd, CoreDNS, local-path-provisioner) and Debian packages (debootstrap),
# see node/build.sh. Build outputs are cached under deploy/kind/.cache/ keyed by version;
# the node image is tagged with a hash of its inputs, so a warm `up` skips every build,
# and `up` recreates a running cluster whose node runs another image. Order: $NODE_IMAGE,
# a local kindest/node:v1.34.x, our cached image, a pull of kindest/node, our build.
# Our own image has no default CNI (kind-config.yaml) but a static ptp config for one
# node, and a default StorageClass (local-path). Environment:
#   KIND_CLUSTER_NAME (kitex-anyconn)   NODE_IMAGE (use this image, build nothing)
#   KUBECONFIG (kind's default: $KUBECONFIG or ~/.kube/config; a copy also goes to .cache/kubeconfig,
#   or .cache/kubeconfig-<name> for another cluster name)
#   KIND_EXPERIMENTAL_DOCKER_NETWORK (kind's: the docker network of the node; "kind" by default)
#   DEBIAN_MIRROR (http://deb.debian.org/debian)   PULL_TIMEOUT (10 s for kindest/node)
set -euo pipefail

KIND_DIR=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$KIND_DIR/../.." && pwd)
CACHE=$KIND_DIR/.cache

CLUSTER=${KIND_CLUSTER_NAME:-kitex-anyconn}
# The kubeconfig copy: one per cluster besides the default one.
KUBECONFIG_COPY=$CACHE/kubeconfig
[ "$CLUSTER" = kitex-anyconn ] || KUBECONFIG_COPY=$CACHE/kubeconfig-$CLUSTER
KIND=$REPO/bin/kind
KIND_VERSION=v0.30.0
K8S_VERSION=v1.34.4
ETCD_VERSION=v3.6.5
ETCD_IMAGE_TAG=3.6.5-0
COREDNS_VERSION=v1.12.1
LOCAL_PATH_VERSION=v0.0.30 # rancher/local-path-provisioner, as kind v0.30.0 ships
PAUSE_TAGS="3.10.1 3.10" # kubeadm v1.34 wants 3.10.1, kind's containerd config names 3.10
KINDEST_NODE=kindest/node:v1.34.0 # kind v0.30.0's default node image
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
PULL_TIMEOUT=${PULL_TIMEOUT:-10}
WAIT=180s # each wait below is bounded by this

K8S_BIN=$CACHE/bin/k8s-$K8S_VERSION
ETCD_BIN=$CACHE/bin/etcd-$ETCD_VERSION/etcd
COREDNS_BIN=$CACHE/bin/coredns-$COREDNS_VERSION/coredns
LOCAL_PATH_BIN=$CACHE/bin/local-path-provisioner-$LOCAL_PATH_VERSION/local-path-provisioner
K8S_CMDS="kube-apiserver kube-controller-manager kube-scheduler kube-proxy kubeadm kubectl kubelet"

t0=$(date +%s)
log() { printf '%s cluster.sh: %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# go_build DIR OUT PKG LDFLAGS...: a static, trimmed build from the module in DIR, niced
# (the machines are shared); written to OUT.tmp first so a killed build leaves no OUT.
go_build() {
	local dir=$1 out=$2 pkg=$3 ldflags=$4 t
	t=$(date +%s)
	mkdir -p "$(dirname "$out")"
	(cd "$dir" && CGO_ENABLED=0 nice -n 10 go build -trimpath -ldflags "-s -w $ldflags" -o "$out.tmp" $pkg)
	mv "$out.tmp" "$out"
	log "built $(basename "$out") in $(($(date +%s) - t)) s"
}

build_k8s() {
	local missing=false c ld="" p
	for c in $K8S_CMDS; do [ -x "$K8S_BIN/$c" ] || missing=true; done
	$missing || return 0
	log "building Kubernetes $K8S_VERSION ($K8S_CMDS; about 6 min on 2 free cores)"
	for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
		ld="$ld -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$(echo "$K8S_VERSION" | cut -d. -f2)"
		ld="$ld -X $p.gitTreeState=clean -X $p.buildDate=1970-01-01T00:00:00Z"
	done
	rm -rf "$K8S_BIN.tmp"
	mkdir -p "$K8S_BIN.tmp"
	local t=$(date +%s) pkgs=""
	for c in $K8S_CMDS; do pkgs="$pkgs k8s.io/kubernetes/cmd/$c"; done
	(cd "$KIND_DIR/k8s" && CGO_ENABLED=0 nice -n 10 go build -trimpath -ldflags "-s -w $ld" -o "$K8S_BIN.tmp/" $pkgs)
	rm -rf "$K8S_BIN"
	mv "$K8S_BIN.tmp" "$K8S_BIN"
	log "built Kubernetes in $(($(date +%s) - t)) s"
}

build_binaries() {
	build_k8s
	[ -x "$ETCD_BIN" ] || go_build "$KIND_DIR/etcd" "$ETCD_BIN" go.etcd.io/etcd/server/v3 ""
	[ -x "$COREDNS_BIN" ] || go_build "$KIND_DIR/coredns" "$COREDNS_BIN" github.com/coredns/coredns \
		"-X github.com/coredns/coredns/coremain.GitCommit=$COREDNS_VERSION"
	[ -x "$LOCAL_PATH_BIN" ] || go_build "$KIND_DIR/local-path" "$LOCAL_PATH_BIN" github.com/rancher/local-path-provisioner \
		"-X main.VERSION=$LOCAL_PATH_VERSION"
	# Tiny std-lib binaries of the main module: rebuilt each time (Go's cache makes it quick).
	(cd "$REPO" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$CACHE/bin/" ./deploy/kind/runc-wrapper ./deploy/kind/pause)
}

ensure_docker() {
	# Not fd 9 (the lock): a dockerd started from here would hold the lock forever.
	"$REPO/deploy/docker/dockerd.sh" 9>&-
}

ensure_kind() {
	if [ ! -x "$KIND" ]; then
		log "building the pinned kind ($KIND)"
		make -C "$REPO" bin/kind >/dev/null
	fi
	"$KIND" version | grep -q "^kind $KIND_VERSION " || die "$KIND is not kind $KIND_VERSION: $("$KIND" version)"
}

# kind's base files (images/base/files) from the Go module cache.
kind_base_files() {
	local dir
	dir=$(go env GOMODCACHE)/sigs.k8s.io/kind@$KIND_VERSION/images/base/files
	if [ ! -d "$dir" ]; then
		(cd "$(mktemp -d)" && go mod download sigs.k8s.io/kind@"$KIND_VERSION")
	fi
	[ -d "$dir" ] || die "no $dir after go mod download"
	echo "$dir"
}

# kind_storage_go: the kind source file holding its default storage manifest (local-path).
kind_storage_go() {
	echo "$(dirname "$(dirname "$(dirname "$(kind_base_files)")")")/pkg/build/nodeimage/const_storage.go"
}

# input_hash: everything the node image is made of, so a change rebuilds it.
input_hash() {
	local files
	files=$(kind_base_files)
	{
		echo "$K8S_VERSION $ETCD_VERSION $ETCD_IMAGE_TAG $COREDNS_VERSION $PAUSE_TAGS $LOCAL_PATH_VERSION $KIND_VERSION"
		cd "$KIND_DIR"
		cat node/build.sh node/10-ptp.conflist runc-wrapper/main.go pause/main.go \
			k8s/go.mod k8s/go.sum etcd/go.mod etcd/go.sum coredns/go.mod coredns/go.sum local-path/go.mod local-path/go.sum \
			"$(kind_storage_go)"
		cd "$files" && find . -type f | LC_ALL=C sort | xargs sha256sum
	} | sha256sum | cut -c1-10
}

# node_image sets IMAGE to the node image to use, building it if needed, and NODE_KIND to
# "kindest" when that is an upstream kindest/node image (which brings its own CNI).
# Order: $NODE_IMAGE; a local kindest/node:v1.34.x; our cached image for these inputs;
# pulling kindest/node (bounded by PULL_TIMEOUT); building ours.
NODE_KIND=own
IMAGE=
node_image() {
	if [ -n "${NODE_IMAGE:-}" ]; then
		case $NODE_IMAGE in kindest/*) NODE_KIND=kindest ;; esac
		IMAGE=$NODE_IMAGE
		return
	fi
	local img hash image
	img=$(docker images --format '{{.Repository}}:{{.Tag}}' kindest/node | grep -m1 ':v1\.34\.' || true)
	if [ -n "$img" ]; then
		log "using the local $img"
		NODE_KIND=kindest
		IMAGE=$img
		return
	fi
	# Our own image is built with debootstrap and chroot: Linux, as root, only.
	local own=false
	if [ "$(uname -s)" = Linux ] && [ "$(id -u)" = 0 ]; then
		own=true
		hash=$(input_hash)
		image=kitex-anyconn/kind-node:$K8S_VERSION-$hash
		if docker image inspect "$image" >/dev/null 2>&1; then
			log "node image $image cached"
			IMAGE=$image
			return
		fi
	fi
	local pull=(docker pull -q "$KINDEST_NODE")
	if command -v timeout >/dev/null 2>&1; then
		pull=(timeout "$PULL_TIMEOUT" "${pull[@]}")
	fi
	if "${pull[@]}" >/dev/null 2>&1; then
		log "pulled $KINDEST_NODE"
		NODE_KIND=kindest
		IMAGE=$KINDEST_NODE
		return
	fi
	$own || die "cannot pull $KINDEST_NODE, and building a node image needs Linux and root (debootstrap, chroot)"
	log "no kindest/node:v1.34.x (not local, pull failed within ${PULL_TIMEOUT} s): building $image"
	build_binaries
	local t=$(date +%s)
	NODE_IMAGE=$image INPUT_HASH=$hash CACHE=$CACHE K8S_BIN=$K8S_BIN ETCD_BIN=$ETCD_BIN \
		COREDNS_BIN=$COREDNS_BIN PAUSE_BIN=$CACHE/bin/pause RUNC_WRAPPER_BIN=$CACHE/bin/runc-wrapper \
		KIND_BASE_FILES=$(kind_base_files) K8S_VERSION=$K8S_VERSION ETCD_IMAGE_TAG=$ETCD_IMAGE_TAG \
		COREDNS_VERSION=$COREDNS_VERSION PAUSE_TAGS=$PAUSE_TAGS DEBIAN_MIRROR=$DEBIAN_MIRROR \
		LOCAL_PATH_BIN=$LOCAL_PATH_BIN LOCAL_PATH_VERSION=$LOCAL_PATH_VERSION KIND_STORAGE_GO=$(kind_storage_go) \
		"$KIND_DIR/node/build.sh"
	log "node image assembled in $(($(date +%s) - t)) s"
	IMAGE=$image
	prune_images
}

# prune_images removes our node and base images other than the current ones (1.5 GB each);
# one still used by a running node stays (docker refuses), until the next run.
prune_images() {
	[ "$NODE_KIND" = own ] || return 0
	local hash=${IMAGE##*-}
	{
		docker images --format '{{.Repository}}:{{.Tag}}' kitex-anyconn/kind-node | grep -vx "$IMAGE" || true
		docker images --format '{{.Repository}}:{{.Tag}}' kitex-anyconn/kind-base | grep -vx "kitex-anyconn/kind-base:$hash" || true
		docker images --format '{{.Repository}}:{{.Tag}}' kitex-anyconn/local-path-helper | grep -vx "kitex-anyconn/local-path-helper:$hash" || true
	} | xargs -r docker rmi >/dev/null 2>&1 || true
}

# kubectl: ours if built, else the node's own.
kctl() {
	if [ -x "$K8S_BIN/kubectl" ]; then
		"$K8S_BIN/kubectl" --context "kind-$CLUSTER" "$@"
	else
		docker exec -i "$CLUSTER-control-plane" kubectl --kubeconfig /etc/kubernetes/admin.conf "$@"
	fi
}

cluster_exists() {
	"$KIND" get clusters 2>/dev/null | grep -qx "$CLUSTER"
}

# wait_api waits (bounded by $WAIT) until the API server is ready and authorizes the
# admin: a node that docker restarted (dockerd restarted) boots its control plane
# again, and for a while the API server answers but refuses everything.
wait_api() {
	local i limit=${WAIT%s}
	for ((i = 0; i < limit; i++)); do
		if kctl get --raw=/readyz >/dev/null 2>&1 && kctl get nodes >/dev/null 2>&1; then
			return 0
		fi
		sleep 1
	done
	kctl get --raw=/readyz?verbose >&2 || true
	die "the API server of $CLUSTER is not ready after $WAIT"
}

up() {
	mkdir -p "$CACHE"
	ensure_docker
	ensure_kind
	node_image
	local image=$IMAGE node=$CLUSTER-control-plane
	if cluster_exists; then
		local state current
		state=$(docker inspect -f '{{.State.Status}}' "$node" 2>/dev/null || echo missing)
		current=$(docker inspect -f '{{.Config.Image}}' "$node" 2>/dev/null || true)
		if [ "$state" != running ]; then
			log "cluster $CLUSTER exists but its node is $state (dockerd restarted?): recreating it"
			"$KIND" delete cluster --name "$CLUSTER" >&2
		elif [ "$current" != "$image" ]; then
			log "cluster $CLUSTER runs $current, not $image: recreating it"
			"$KIND" delete cluster --name "$CLUSTER" >&2
		else
			log "cluster $CLUSTER already exists"
		fi
	fi
	if ! cluster_exists; then
		local config=$KIND_DIR/kind-config.yaml t=$(date +%s)
		if [ "$NODE_KIND" = kindest ]; then
			config=$CACHE/kind-config-kindest.yaml # upstream images bring kindnet: keep the default CNI
			grep -v disableDefaultCNI "$KIND_DIR/kind-config.yaml" >"$config"
		fi
		log "creating cluster $CLUSTER from $image"
		"$KIND" create cluster --name "$CLUSTER" --image "$image" --config "$config" --wait "$WAIT" >&2
		log "kind create cluster took $(($(date +%s) - t)) s"
		prune_images
	fi
	"$KIND" get kubeconfig --name "$CLUSTER" >"$KUBECONFIG_COPY"
	wait_api
	kctl wait --for=condition=Ready node --all --timeout="$WAIT" >/dev/null
	kctl -n kube-system rollout status deployment/coredns --timeout="$WAIT" >/dev/null
	# The default StorageClass's provisioner: PVCs stay Pending without it, but a cluster
	# without PVCs works, so only warn.
	if kctl -n local-path-storage get deployment/local-path-provisioner >/dev/null 2>&1 &&
		! kctl -n local-path-storage rollout status deployment/local-path-provisioner --timeout=60s >/dev/null; then
		log "warning: local-path-provisioner (default StorageClass) is not ready"
	fi
	log "cluster $CLUSTER is ready ($(($(date +%s) - t0)) s); node image $image"
	log "kubeconfig: context kind-$CLUSTER in kind's default (${KUBECONFIG:-$HOME/.kube/config}); copy in $KUBECONFIG_COPY"
	[ -x "$K8S_BIN/kubectl" ] && log "kubectl $K8S_VERSION: $K8S_BIN/kubectl" || true
}

down() {
	ensure_kind
	if cluster_exists; then
		"$KIND" delete cluster --name "$CLUSTER" >&2
	else
		log "no cluster $CLUSTER"
	fi
	rm -f "$KUBECONFIG_COPY"
}

main() {
	case ${1:-} in
	up | down | node-image) ;;
	*)
		echo "usage: $0 up|down|node-image" >&2
		exit 2
		;;
	esac
	mkdir -p "$CACHE"
	# One run at a time (builds and cluster creation share the cache and names).
	if command -v flock >/dev/null 2>&1; then
		exec 9>"$CACHE/.lock"
		flock -w 3600 9 || die "another cluster.sh has held $CACHE/.lock for an hour"
	fi
	case $1 in
	up) up ;;
	down) down ;;
	node-image)
		ensure_docker
		node_image
		echo "$IMAGE"
		;;
	esac
}

main "$@"
