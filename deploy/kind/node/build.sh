#!/usr/bin/env bash
# Assemble the offline kind node image (called by deploy/kind/cluster.sh; see there).
#
# Environment (all set by cluster.sh):
#   NODE_IMAGE       tag to produce, e.g. kitex-anyconn/kind-node:v1.34.4-<hash>
#   INPUT_HASH       short hash of every input (also tags the base image)
#   CACHE            deploy/kind/.cache
#   K8S_BIN          dir with kubelet kubeadm kubectl kube-apiserver kube-controller-manager
#                    kube-scheduler kube-proxy
#   ETCD_BIN COREDNS_BIN PAUSE_BIN RUNC_WRAPPER_BIN   the other static binaries
#   KIND_BASE_FILES  images/base/files of the kind module (read from the Go module cache)
#   K8S_VERSION ETCD_IMAGE_TAG COREDNS_VERSION PAUSE_TAGS DEBIAN_MIRROR
#   LOCAL_PATH_BIN LOCAL_PATH_VERSION KIND_STORAGE_GO  local-path-provisioner and kind's
#                    const_storage.go (its default-storage manifest, images replaced by ours)
#
# Steps: a debootstrap bookworm minbase (cached as a tar by package list), kind's base
# files and systemd clean-up, Debian's containerd/runc/CNI plugins wired where kind's
# units expect them, our runc wrapper as /usr/local/sbin/runc, a static CNI config;
# `docker import` gives the base image. Control-plane images are built FROM scratch
# (kube-proxy on the base, for iptables), saved, and imported into the node's
# containerd in a privileged container of the base, which is then committed.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
log() { printf '%s node-image: %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
# quiet CMD...: run CMD, showing its output only if it fails (the legacy builder's deprecation banner).
quiet() {
	local out
	out=$("$@" 2>&1) || { printf '%s\n' "$out" >&2; return 1; }
}

# Debian packages of the node (kind's base Dockerfile installs about these).
PKGS=systemd,systemd-sysv,dbus,containerd,runc,containernetworking-plugins,iptables,iproute2,ethtool,socat,util-linux,mount,ebtables,kmod,ca-certificates,conntrack,procps,libseccomp2,bash,nftables,jq
SUITE=bookworm
BASE_IMAGE=kitex-anyconn/kind-base:$INPUT_HASH
BUILD_CTR=kitex-anyconn-node-build
LOCAL_PATH_IMAGE=kitex-anyconn/local-path-provisioner:$LOCAL_PATH_VERSION
LOCAL_PATH_HELPER=kitex-anyconn/local-path-helper:$INPUT_HASH # the node base: has sh, mkdir, rm
work=$CACHE/work
mkdir -p "$work" "$CACHE/debootstrap"

# 1. debootstrap tree, cached as a tar keyed by suite and package list.
debootstrap_tar() {
	local key tar tree
	key=$(printf '%s %s' "$SUITE" "$PKGS" | sha256sum | cut -c1-12)
	tar=$CACHE/debootstrap/$SUITE-minbase-$key.tar
	if [ -s "$tar" ]; then
		echo "$tar"
		return
	fi
	if ! command -v debootstrap >/dev/null 2>&1; then
		log "installing debootstrap (apt)"
		apt-get update -qq >/dev/null # a fresh machine may have no package lists yet
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
	fi
	tree=$CACHE/debootstrap/tree-$key
	rm -rf "$tree"
	log "debootstrap $SUITE minbase (2 to 5 min)"
	nice -n 10 debootstrap --variant=minbase --include="$PKGS" "$SUITE" "$tree" "$DEBIAN_MIRROR" >"$CACHE/debootstrap/$key.log" 2>&1 ||
		{ tail -n 20 "$CACHE/debootstrap/$key.log" >&2; exit 1; }
	rm -rf "$tree"/var/cache/apt/archives/*.deb "$tree"/var/lib/apt/lists/*_* || true
	tar -C "$tree" --numeric-owner -cf "$tar.tmp" . && mv "$tar.tmp" "$tar"
	rm -rf "$tree"
	echo "$tar"
}

# 2. the node base: debootstrap tree + kind's base files, as kind's base Dockerfile does.
build_base() {
	if docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
		log "base image $BASE_IMAGE cached"
		return
	fi
	local tar R F
	tar=$(debootstrap_tar)
	R=$work/rootfs
	F=$KIND_BASE_FILES
	rm -rf "$R"
	mkdir -p "$R"
	tar -C "$R" --numeric-owner -xf "$tar"

	log "adding kind's base files from $F"
	install -m 0755 "$F"/usr/local/bin/* "$R/usr/local/bin/"
	mkdir -p "$R/kind" "$R/LICENSES" "$R/etc/containerd" "$R/etc/default" "$R/etc/sysctl.d" \
		"$R/etc/systemd/system/kubelet.service.d" "$R/etc/kubernetes/manifests" "$R/opt/cni/bin" "$R/etc/cni/net.d"
	cp -r "$F/kind/." "$R/kind/"
	find "$R/kind" -type f -exec chmod 0644 {} +
	chmod 0755 "$R/kind" "$R/kind/bin" "$R"/kind/bin/*
	install -m 0644 "$F"/LICENSES/* "$R/LICENSES/"
	find "$F/etc" -maxdepth 1 -type f -exec install -m 0644 {} "$R/etc/" \;
	install -m 0644 "$F"/etc/containerd/* "$R/etc/containerd/"
	install -m 0644 "$F"/etc/default/* "$R/etc/default/"
	install -m 0644 "$F"/etc/sysctl.d/* "$R/etc/sysctl.d/"
	find "$F/etc/systemd/system" -maxdepth 1 -type f -exec install -m 0644 {} "$R/etc/systemd/system/" \;
	install -m 0644 "$F"/etc/systemd/system/kubelet.service.d/* "$R/etc/systemd/system/kubelet.service.d/"

	log "systemd clean-up and services"
	find "$R/lib/systemd/system/sysinit.target.wants/" -name systemd-tmpfiles-setup.service -delete
	rm -f "$R"/lib/systemd/system/multi-user.target.wants/* "$R"/etc/systemd/system/*.wants/* \
		"$R"/lib/systemd/system/local-fs.target.wants/* "$R"/lib/systemd/system/sockets.target.wants/*udev* \
		"$R"/lib/systemd/system/sockets.target.wants/*initctl* "$R"/lib/systemd/system/basic.target.wants/*
	echo "ReadKMsg=no" >>"$R/etc/systemd/journald.conf"
	[ -e "$R/sbin/init" ] || ln -s /lib/systemd/systemd "$R/sbin/init"
	chroot "$R" systemctl enable kubelet.service containerd.service undo-mount-hacks.service >/dev/null 2>&1
	chroot "$R" systemctl mask systemd-binfmt.service >/dev/null 2>&1

	log "containerd, runc wrapper, CNI"
	# kind's units and scripts expect containerd under /usr/local/bin; Debian has /usr/bin.
	for b in containerd containerd-shim-runc-v2 ctr; do
		ln -sf "/usr/bin/$b" "$R/usr/local/bin/$b"
	done
	# runc in front of Debian's /usr/sbin/runc: drops capabilities the host lacks.
	install -m 0755 "$RUNC_WRAPPER_BIN" "$R/usr/local/sbin/runc"
	cp -a "$R"/usr/lib/cni/. "$R/opt/cni/bin/"
	install -m 0644 "$here/10-ptp.conflist" "$R/etc/cni/net.d/10-ptp.conflist"
	chroot "$R" /bin/sh -c 'ctr oci spec | jq ".hooks.createContainer[.hooks.createContainer | length] |= . + {\"path\": \"/kind/bin/mount-product-files.sh\"}" | jq "del(.process.rlimits)" > /etc/containerd/cri-base.json'
	jq -e '.hooks.createContainer[0].path == "/kind/bin/mount-product-files.sh"' "$R/etc/containerd/cri-base.json" >/dev/null
	# Lowering oom_score_adj needs CAP_SYS_RESOURCE, which the host may lack.
	sed -i 's/^\([[:space:]]*restrict_oom_score_adj[[:space:]]*=\).*/\1 true/' "$R/etc/containerd/config.toml"
	grep -q 'restrict_oom_score_adj = true' "$R/etc/containerd/config.toml"
	echo "$K8S_VERSION" >"$R/kind/version"
	# kind's default storage (local-path-provisioner) from the kind module, with our images.
	mkdir -p "$R/kind/manifests"
	awk '/^const defaultStorageManifest = `/ { f = 1; next } f && /^`/ { exit } f' "$KIND_STORAGE_GO" |
		sed -e 's|` + storageProvisionerImage + `|'"$LOCAL_PATH_IMAGE"'|' -e 's|` + storageHelperImage + `|'"$LOCAL_PATH_HELPER"'|' \
			>"$R/kind/manifests/default-storage.yaml"
	grep -q "image: $LOCAL_PATH_IMAGE" "$R/kind/manifests/default-storage.yaml"
	if grep -q '`' "$R/kind/manifests/default-storage.yaml"; then
		log "could not extract kind's storage manifest from $KIND_STORAGE_GO"
		exit 1
	fi
	rm -f "$R/etc/machine-id" && touch "$R/etc/machine-id"

	log "docker import of the base"
	tar -C "$R" --numeric-owner -c . | docker import \
		--change 'ENV container=docker' \
		--change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
		--change 'ENTRYPOINT ["/usr/local/bin/entrypoint", "/sbin/init"]' \
		- "$BASE_IMAGE-import" >/dev/null
	# STOPSIGNAL cannot be set by import: systemd exits on SIGRTMIN+3.
	printf 'FROM %s\nSTOPSIGNAL SIGRTMIN+3\n' "$BASE_IMAGE-import" | DOCKER_BUILDKIT=0 quiet docker build -q -t "$BASE_IMAGE" -
	docker rmi "$BASE_IMAGE-import" >/dev/null
	rm -rf "$R"
}

# scratch_image TAG BINARY PATH_IN_IMAGE [FROM]: a one-binary image.
scratch_image() {
	local tag=$1 bin=$2 dest=$3 from=${4:-scratch} ctx
	ctx=$work/ctx-$(basename "$bin")
	rm -rf "$ctx"
	mkdir -p "$ctx"
	cp "$bin" "$ctx/"
	{
		echo "FROM $from"
		echo "COPY $(basename "$bin") $dest"
		if [ "$from" = scratch ]; then
			echo "ENV PATH=/usr/local/bin:/"
		fi
		echo "ENTRYPOINT [\"$dest\"]"
	} >"$ctx/Dockerfile"
	DOCKER_BUILDKIT=0 quiet docker build -q -t "$tag" "$ctx"
	rm -rf "$ctx"
}

build_base
if [ "${BASE_ONLY:-}" = 1 ]; then # for debugging the base alone
	exit 0
fi

log "control-plane images"
images=()
for c in kube-apiserver kube-controller-manager kube-scheduler; do
	scratch_image "registry.k8s.io/$c:$K8S_VERSION" "$K8S_BIN/$c" "/usr/local/bin/$c"
	images+=("registry.k8s.io/$c:$K8S_VERSION")
done
# kube-proxy runs iptables: on the node base, which has them in /usr/sbin.
scratch_image "registry.k8s.io/kube-proxy:$K8S_VERSION" "$K8S_BIN/kube-proxy" /usr/local/bin/kube-proxy "$BASE_IMAGE"
images+=("registry.k8s.io/kube-proxy:$K8S_VERSION")
scratch_image "registry.k8s.io/etcd:$ETCD_IMAGE_TAG" "$ETCD_BIN" /usr/local/bin/etcd
images+=("registry.k8s.io/etcd:$ETCD_IMAGE_TAG")
scratch_image "registry.k8s.io/coredns/coredns:$COREDNS_VERSION" "$COREDNS_BIN" /coredns
images+=("registry.k8s.io/coredns/coredns:$COREDNS_VERSION")
scratch_image "$LOCAL_PATH_IMAGE" "$LOCAL_PATH_BIN" /usr/local/bin/local-path-provisioner
docker tag "$BASE_IMAGE" "$LOCAL_PATH_HELPER"
images+=("$LOCAL_PATH_IMAGE" "$LOCAL_PATH_HELPER")
first=
for t in $PAUSE_TAGS; do
	if [ -z "$first" ]; then
		scratch_image "registry.k8s.io/pause:$t" "$PAUSE_BIN" /pause
		first=$t
	else
		docker tag "registry.k8s.io/pause:$first" "registry.k8s.io/pause:$t"
	fi
	images+=("registry.k8s.io/pause:$t")
done
docker save -o "$work/images.tar" "${images[@]}"

log "importing ${#images[@]} images into the node's containerd"
docker rm -f "$BUILD_CTR" >/dev/null 2>&1 || true
docker run -d --privileged --name "$BUILD_CTR" --entrypoint sleep \
	-v "$work/images.tar:/kind-images.tar:ro" -v "$K8S_BIN:/kind-bin:ro" \
	"$BASE_IMAGE" infinity >/dev/null
# shellcheck disable=SC2016
docker exec "$BUILD_CTR" bash -ec '
	install -m 0755 /kind-bin/kubelet /kind-bin/kubeadm /kind-bin/kubectl /usr/bin/
	containerd >/tmp/containerd.log 2>&1 &
	pid=$!
	for i in $(seq 120); do ctr version >/dev/null 2>&1 && break; sleep 0.5; done
	ctr version >/dev/null || { tail -n 20 /tmp/containerd.log; exit 1; }
	ctr -n k8s.io images import --all-platforms --no-unpack --digests /kind-images.tar >/dev/null
	ctr -n k8s.io images ls -q | grep -v -e "^sha256:" -e "^import-"
	kill $pid
	for i in $(seq 60); do kill -0 $pid 2>/dev/null || break; sleep 0.5; done
	rm -rf /tmp/containerd.log /run/containerd
' >&2
docker kill "$BUILD_CTR" >/dev/null
docker commit \
	--change 'ENTRYPOINT ["/usr/local/bin/entrypoint", "/sbin/init"]' \
	--change 'CMD []' \
	--change "LABEL io.github.anyconn.kitex-anyconn.inputs=$INPUT_HASH" \
	"$BUILD_CTR" "$NODE_IMAGE" >/dev/null
docker rm -f "$BUILD_CTR" >/dev/null
rm -f "$work/images.tar"
log "built $NODE_IMAGE"
