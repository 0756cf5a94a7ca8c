# shellcheck shell=bash
# A real node for the local cluster (`scripts/dev-cluster up --node`): kubelet, kube-scheduler,
# kube-proxy and CoreDNS built from their Go modules (cached beside the control plane), with
# containerd, runc and the CNI plugins from Debian, and a pause image built here from source.
#
# Sourced by scripts/dev-cluster after lib/common.sh and lib/k8s-build.sh. Needs root (a bridge,
# iptables rules, mounts, cgroups): see docs/development.md, "The node".
#
# Everything stays on this machine:
#   - pods get 10.244.0.0/24 on the bridge loopdev0 (gateway 10.244.0.1, no masquerade) and routes
#     for the pod and Service ranges only, never a default route;
#   - the host routes the Service range 10.0.0.0/24 to the bridge (never out of eth0), and two
#     FORWARD rules drop whatever would cross between the bridge and any other interface;
#   - kube-apiserver, kubelet and CoreDNS listen on the bridge's address, everything else on
#     127.0.0.1.
# One node per machine: the bridge and its address are fixed. The state directory that owns it
# is written to $NODE_OWNER_FILE, and a second `up --node` elsewhere refuses while it is alive.

NODE_NAME=loop-dev-node
NODE_BRIDGE=loopdev0
NODE_IP=10.244.0.1
NODE_POD_CIDR=10.244.0.0/24
NODE_SERVICE_CIDR=10.0.0.0/24
# The node carries no taint: the README's quick start runs on it as written.
COREDNS_VERSION="${COREDNS_VERSION:-1.15.0}"
CRICTL_VERSION="${CRICTL_VERSION:-1.37.0}"
NODE_OWNER_FILE=/run/loop-dev-cluster-node.owner
NODE_FORWARD_COMMENT=loop-dev-cluster-node
PAUSE_IMAGE=localhost/loop-pause:dev

# --- building ------------------------------------------------------------------------------------

node_build_coredns() {
	require_go
	local dir
	dir="$(k8s_prepare_module coredns "module loop-token-operator.local/coredns-build

go 1.26

require github.com/coredns/coredns v${COREDNS_VERSION}")"
	# Only the plugins the dev cluster's Corefile uses: no forwarding anywhere (nothing leaves the
	# machine), and none of the cloud back ends, whose modules are most of CoreDNS's download.
	cat >"$dir/main.go" <<-'EOF'
		// CoreDNS with the plugins the local cluster uses (see scripts/lib/node.sh).
		package main

		import (
			"github.com/coredns/coredns/coremain"

			_ "github.com/coredns/coredns/plugin/bind"
			_ "github.com/coredns/coredns/plugin/cache"
			_ "github.com/coredns/coredns/plugin/errors"
			_ "github.com/coredns/coredns/plugin/health"
			_ "github.com/coredns/coredns/plugin/kubernetes"
			_ "github.com/coredns/coredns/plugin/ready"
		)

		func main() { coremain.Run() }
	EOF
	log_build "go build CoreDNS v${COREDNS_VERSION} (plugins: bind cache errors health kubernetes ready)"
	(cd "$dir" && GOFLAGS=-mod=mod go get "github.com/coredns/coredns@v${COREDNS_VERSION}" &&
		CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath -ldflags "-s -w" -o "$K8S_BIN/coredns" .) ||
		die "building CoreDNS v${COREDNS_VERSION} failed (see the go output above)"
}

node_build_crictl() {
	require_go
	local dir
	dir="$(k8s_prepare_module cri-tools "module loop-token-operator.local/crictl-build

go 1.26

require sigs.k8s.io/cri-tools v${CRICTL_VERSION}")"
	log_build "go build sigs.k8s.io/cri-tools/cmd/crictl v${CRICTL_VERSION}"
	(cd "$dir" && GOFLAGS=-mod=mod go get "sigs.k8s.io/cri-tools@v${CRICTL_VERSION}" &&
		CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath -ldflags "-s -w" -o "$K8S_BIN/crictl" sigs.k8s.io/cri-tools/cmd/crictl) ||
		die "building crictl v${CRICTL_VERSION} failed (see the go output above)"
}

# The sandbox image: a static `pause` (sleeps until a signal, reaps nothing: PID namespaces are
# not shared) in an image FROM scratch, saved as an archive containerd imports.
node_build_pause() {
	local dir="$K8S_CACHE/src/pause" ctr
	command -v gcc >/dev/null || die "gcc is needed to build the pause image (apt-get install gcc libc6-dev)"
	command -v buildah >/dev/null || die "buildah is needed to build the pause image (apt-get install buildah)"
	mkdir -p "$dir"
	cat >"$dir/pause.c" <<-'EOF'
		/* The pod sandbox's process: holds the namespaces, waits for a signal to stop. */
		#include <signal.h>
		#include <stdlib.h>
		#include <unistd.h>
		static void stop(int sig) { (void)sig; _exit(0); }
		int main(void) {
			signal(SIGTERM, stop);
			signal(SIGINT, stop);
			for (;;) pause();
		}
	EOF
	log_build "gcc -static pause.c; image $PAUSE_IMAGE FROM scratch (buildah)"
	gcc -static -O2 -o "$dir/pause" "$dir/pause.c" || die "compiling the pause binary failed"
	ctr="$(buildah from --quiet scratch)" || die "buildah from scratch failed"
	{
		buildah copy --quiet "$ctr" "$dir/pause" /pause >/dev/null &&
			buildah config --entrypoint '["/pause"]' --user 65535:65535 "$ctr" &&
			rm -f "$K8S_BIN/pause.tar" &&
			buildah commit --quiet "$ctr" "docker-archive:$K8S_BIN/pause.tar:$PAUSE_IMAGE" >/dev/null
	} || {
		buildah rm "$ctr" >/dev/null 2>&1 || true
		die "building the pause image failed"
	}
	buildah rm "$ctr" >/dev/null
}

# Build whatever the node lacks (the control plane's binaries are ensured by the caller).
node_ensure_binaries() {
	local missing=() n
	for n in kubelet kube-scheduler kube-proxy; do
		[[ -n "$(k8s_find_bin "$n")" ]] || missing+=("$n")
	done
	((${#missing[@]} == 0)) || k8s_build_kubernetes "${missing[@]}"
	[[ -n "$(k8s_find_bin coredns)" ]] || node_build_coredns
	[[ -n "$(k8s_find_bin crictl)" ]] || node_build_crictl
	[[ -f "$K8S_BIN/pause.tar" ]] || node_build_pause
}

# What the node needs from the machine, said all at once.
node_check_host() {
	local missing=() c
	((EUID == 0)) || die "the node needs root (a bridge, iptables rules, mounts and cgroups); run as root, or use 'up' without --node"
	for c in containerd runc iptables ip conntrack findmnt; do
		command -v "$c" >/dev/null || missing+=("$c")
	done
	[[ -x /usr/lib/cni/bridge && -x /usr/lib/cni/host-local && -x /usr/lib/cni/loopback ]] || missing+=("CNI plugins in /usr/lib/cni")
	((${#missing[@]} == 0)) ||
		die "the node needs: ${missing[*]} (Debian: apt-get install containerd runc iptables iproute2 conntrack containernetworking-plugins)"
	[[ -d /proc/sys/net/bridge ]] || modprobe br_netfilter 2>/dev/null || true
	[[ -d /proc/sys/net/bridge ]] ||
		die "the kernel has no br_netfilter (net.bridge.bridge-nf-call-iptables): Services would not answer pods on the same bridge"
}

# --- the machine's side: bridge, routes, sysctls, forwarding rules -------------------------------

# Refuse when another live state directory owns the node.
node_claim() {
	local owner
	owner="$(cat "$NODE_OWNER_FILE" 2>/dev/null || true)"
	if [[ -n "$owner" && "$owner" != "$STATE" ]]; then
		if [[ -f "$owner/pids/kubelet.pid" ]] && pid_is_ours "$(cat "$owner/pids/kubelet.pid")" "$owner/"; then
			die "a node is already up for $owner (one node per machine); run: LOOP_DEV_CLUSTER_DIR=$owner scripts/dev-cluster down"
		fi
		log "the node of $owner is gone; taking its bridge over"
	fi
	printf '%s\n' "$STATE" >"$NODE_OWNER_FILE"
}

node_sysctl_set() { # KEY VALUE: remember the old value in the state, once
	local key="$1" value="$2" file="/proc/sys/${1//.//}"
	[[ -f "$STATE/node/sysctl.$key" ]] || cat "$file" >"$STATE/node/sysctl.$key"
	printf '%s\n' "$value" >"$file"
}

node_forward_rules() { # -I or -D
	local op="$1"
	iptables -w "$op" FORWARD -i "$NODE_BRIDGE" ! -o "$NODE_BRIDGE" -m comment --comment "$NODE_FORWARD_COMMENT" -j DROP
	iptables -w "$op" FORWARD ! -i "$NODE_BRIDGE" -o "$NODE_BRIDGE" -m comment --comment "$NODE_FORWARD_COMMENT" -j DROP
}

node_network_up() {
	mkdir -p "$STATE/node"
	ls /var/run/netns 2>/dev/null | grep '^cni-' >"$STATE/node/netns-before" || true
	ip link del "$NODE_BRIDGE" 2>/dev/null || true
	ip link add "$NODE_BRIDGE" type bridge
	ip addr add "$NODE_IP/24" dev "$NODE_BRIDGE"
	ip link set "$NODE_BRIDGE" up
	# Service addresses are answered by kube-proxy's rules; without an endpoint they go nowhere,
	# never out of the machine's default route.
	ip route add "$NODE_SERVICE_CIDR" dev "$NODE_BRIDGE"
	node_sysctl_set net.ipv4.ip_forward 1
	node_sysctl_set net.bridge.bridge-nf-call-iptables 1
	while iptables -w -D FORWARD -i "$NODE_BRIDGE" ! -o "$NODE_BRIDGE" -m comment --comment "$NODE_FORWARD_COMMENT" -j DROP 2>/dev/null; do :; done
	node_forward_rules -I
}

# The KUBE-* chains that kubelet and kube-proxy made (kube-proxy --cleanup leaves kubelet's
# KUBE-FIREWALL, KUBE-KUBELET-CANARY and KUBE-IPTABLES-HINT), in every table, IPv4 and IPv6: each
# table is saved, stripped of the lines that name a KUBE- chain, and restored atomically, so
# every other rule of the machine stays as it was. Only Kubernetes names chains KUBE-, and this
# machine runs one node.
node_iptables_cleanup() {
	local save restore table rules
	for save in iptables-save ip6tables-save; do
		command -v "$save" >/dev/null || continue
		restore="${save/-save/-restore}"
		for table in filter nat mangle; do
			rules="$("$save" -t "$table" 2>/dev/null || true)"
			grep -q 'KUBE-' <<<"$rules" || continue
			grep -v -- 'KUBE-' <<<"$rules" | "$restore" -w 5 -T "$table" ||
				log "could not remove the KUBE- chains of the $table table ($save)"
		done
	done
}

# The cni-* network namespaces made while this node was up.
node_own_netns() {
	local ns
	for ns in $(ls /var/run/netns 2>/dev/null | grep '^cni-' || true); do
		grep -qx "$ns" "$STATE/node/netns-before" 2>/dev/null || printf '%s\n' "$ns"
	done
}

node_remove_netns() {
	local ns
	for ns in $(node_own_netns); do
		umount "/var/run/netns/$ns" 2>/dev/null || umount -l "/var/run/netns/$ns" 2>/dev/null || true
		rm -f "/var/run/netns/$ns" 2>/dev/null || true
	done
}

node_network_down() {
	local f key ns
	[[ -d "$STATE/node" ]] || return 0
	while node_forward_rules -D 2>/dev/null; do :; done
	node_iptables_cleanup
	ip link del "$NODE_BRIDGE" 2>/dev/null || true
	for f in "$STATE"/node/sysctl.*; do
		[[ -f "$f" ]] || continue
		key="${f##*/sysctl.}"
		cat "$f" >"/proc/sys/${key//.//}" 2>/dev/null || true
	done
	# Network namespaces made for pods that crictl could not stop (none after a clean stop).
	node_remove_netns
	if [[ -n "$(node_own_netns)" ]] && mountpoint -q /run/netns; then
		# Their mounts can sit under a bind mount of /run/netns over itself (which `ip netns`
		# and container tools make): lift it, and the namespaces' mounts are reachable again.
		umount /run/netns 2>/dev/null || umount -l /run/netns 2>/dev/null || true
		node_remove_netns
	fi
	[[ -z "$(node_own_netns)" ]] || log "could not remove the network namespaces $(node_own_netns | tr '\n' ' ')"
	[[ "$(cat "$NODE_OWNER_FILE" 2>/dev/null || true)" != "$STATE" ]] || rm -f "$NODE_OWNER_FILE"
}

# --- configuration -------------------------------------------------------------------------------

node_write_configs() {
	local d="$STATE/node" sock="$STATE/node/containerd.sock"
	mkdir -p "$d"/{containerd,cni/net.d,cni/ipam,kubelet,pki}
	cat >"$d/containerd.toml" <<-EOF
		version = 2
		root = "$d/containerd/root"
		state = "$d/containerd/state"
		disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.internal.v1.tracing", "io.containerd.tracing.processor.v1.otlp"]
		[grpc]
		  address = "$sock"
		[ttrpc]
		  address = "$sock.ttrpc"
		[debug]
		  address = ""
		[metrics]
		  address = ""
		[plugins."io.containerd.grpc.v1.cri"]
		  sandbox_image = "$PAUSE_IMAGE"
		  # This machine denies lowering oom_score_adj: without this every sandbox fails to start.
		  restrict_oom_score_adj = true
		  disable_apparmor = true
		  enable_selinux = false
		  [plugins."io.containerd.grpc.v1.cri".containerd]
		    snapshotter = "overlayfs"
		    default_runtime_name = "runc"
		    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
		      runtime_type = "io.containerd.runc.v2"
		      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
		        SystemdCgroup = false
		  [plugins."io.containerd.grpc.v1.cri".cni]
		    bin_dir = "/usr/lib/cni"
		    conf_dir = "$d/cni/net.d"
		    max_conf_num = 1
	EOF
	# Pods: an address on the bridge, routes to pods and Services only, no masquerade.
	cat >"$d/cni/net.d/10-loop-dev.conflist" <<-EOF
		{
		  "cniVersion": "1.0.0",
		  "name": "loop-dev",
		  "plugins": [
		    {
		      "type": "bridge",
		      "bridge": "$NODE_BRIDGE",
		      "isGateway": true,
		      "isDefaultGateway": false,
		      "ipMasq": false,
		      "hairpinMode": true,
		      "ipam": {
		        "type": "host-local",
		        "dataDir": "$d/cni/ipam",
		        "ranges": [[{"subnet": "$NODE_POD_CIDR", "gateway": "$NODE_IP"}]],
		        "routes": [{"dst": "$NODE_SERVICE_CIDR", "gw": "$NODE_IP"}]
		      }
		    },
		    {"type": "portmap", "capabilities": {"portMappings": true}}
		  ]
		}
	EOF
	cat >"$d/kubelet.yaml" <<-EOF
		apiVersion: kubelet.config.k8s.io/v1beta1
		kind: KubeletConfiguration
		# Kubernetes 1.35+ refuses cgroup v1 unless told; these machines have a hybrid hierarchy.
		failCgroupV1: false
		cgroupDriver: cgroupfs
		containerRuntimeEndpoint: unix://$sock
		address: $NODE_IP
		port: $KUBELET_PORT
		healthzBindAddress: 127.0.0.1
		healthzPort: $KUBELET_HEALTHZ_PORT
		readOnlyPort: 0
		tlsCertFile: $d/pki/kubelet.crt
		tlsPrivateKeyFile: $d/pki/kubelet.key
		authentication:
		  anonymous: {enabled: false}
		  webhook: {enabled: false}
		  x509: {clientCAFile: $STATE/pki/ca.crt}
		authorization: {mode: AlwaysAllow}
		clusterDNS: [$NODE_IP]
		clusterDomain: cluster.local
		resolvConf: ""
		# Mounted Secrets follow their Secret within about this period (the default is 1m).
		syncFrequency: 10s
		failSwapOn: false
		enforceNodeAllocatable: []
		localStorageCapacityIsolation: false
		evictionHard: {}
		imageGCHighThresholdPercent: 100
		imageGCLowThresholdPercent: 99
		serializeImagePulls: false
		maxPods: 250
		shutdownGracePeriod: 0s
	EOF
	cat >"$d/kube-proxy.yaml" <<-EOF
		apiVersion: kubeproxy.config.k8s.io/v1alpha1
		kind: KubeProxyConfiguration
		mode: iptables
		clientConnection: {kubeconfig: $STATE/kube-proxy.kubeconfig}
		hostnameOverride: $NODE_NAME
		clusterCIDR: $NODE_POD_CIDR
		bindAddress: 127.0.0.1
		healthzBindAddress: 127.0.0.1:$PROXY_HEALTHZ_PORT
		metricsBindAddress: 127.0.0.1:$PROXY_METRICS_PORT
		nodePortAddresses: [$NODE_IP/32]
		# Leave the machine's conntrack table sizes alone.
		conntrack: {maxPerCore: 0, min: 0}
	EOF
	cat >"$d/Corefile" <<-EOF
		.:53 {
		    bind $NODE_IP
		    errors
		    health 127.0.0.1:$DNS_HEALTH_PORT
		    ready 127.0.0.1:$DNS_READY_PORT
		    kubernetes cluster.local in-addr.arpa ip6.arpa {
		        kubeconfig $STATE/coredns.kubeconfig loop-dev
		        pods insecure
		        fallthrough in-addr.arpa ip6.arpa
		    }
		    cache 5
		}
	EOF
	printf 'runtime-endpoint: unix://%s\nimage-endpoint: unix://%s\ntimeout: 30\n' "$sock" "$sock" >"$d/crictl.yaml"
}

# Certificates for the node's components, signed by the cluster's CA (before kube-apiserver
# starts: it names the kubelet client's), and their kubeconfigs.
node_gen_certs() {
	mkdir -p "$STATE/node/pki"
	(
		cd "$STATE/pki"
		sign() { # name subject extfile
			openssl req -newkey rsa:2048 -nodes -keyout "$1.key" -out "$1.csr" -subj "$2" 2>/dev/null
			openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -out "$1.crt" -days 7 -extfile "$3" 2>/dev/null
		}
		printf 'subjectAltName=IP:%s,DNS:%s\nextendedKeyUsage=serverAuth\n' "$NODE_IP" "$NODE_NAME" >kubelet.ext
		sign "$STATE/node/pki/kubelet" "/CN=$NODE_NAME" kubelet.ext
		# The node authorizer's subject: the kubelet reads only what its pods use.
		sign node "/O=system:nodes/CN=system:node:$NODE_NAME" client.ext
		# The subjects the default RBAC bindings name.
		sign kube-proxy "/CN=system:kube-proxy" client.ext
		sign kube-scheduler "/CN=system:kube-scheduler" client.ext
		# CoreDNS reads Services, EndpointSlices and Namespaces: a development convenience.
		sign coredns "/O=system:masters/CN=coredns" client.ext
		# kube-apiserver to kubelet (logs, exec, port-forward).
		sign kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" client.ext
	)
	local u
	for u in node kube-proxy kube-scheduler coredns; do write_kubeconfig "$STATE/$u.kubeconfig" "$u"; done
}

# --- processes -----------------------------------------------------------------------------------

crictl_node() { "$(k8s_find_bin crictl)" --config "$STATE/node/crictl.yaml" "$@"; }

node_ready() {
	[[ "$("$KUBECTL" --kubeconfig "$STATE/kubeconfig" get node "$NODE_NAME" \
		-o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" == True ]]
}

# Started after the control plane (the apiserver already listens on the bridge's address).
node_start() {
	KUBECTL="$(k8s_find_bin kubectl)"
	KUBELET_PORT="$(free_port)" KUBELET_HEALTHZ_PORT="$(free_port)" SCHED_PORT="$(free_port)"
	PROXY_HEALTHZ_PORT="$(free_port)" PROXY_METRICS_PORT="$(free_port)"
	DNS_HEALTH_PORT="$(free_port)" DNS_READY_PORT="$(free_port)"
	node_write_configs

	log "starting containerd (state under $STATE/node)"
	launch containerd containerd --config "$STATE/node/containerd.toml"
	wait_ready containerd "serving CRI" crictl_node info
	"$(k8s_find_bin crictl)" --version >/dev/null
	ctr -a "$STATE/node/containerd.sock" -n k8s.io images import "$K8S_BIN/pause.tar" >"$STATE/logs/pause-import.log" 2>&1 ||
		fail_with_log pause-import "importing the pause image into containerd failed"

	log "starting kube-scheduler"
	launch kube-scheduler "$(k8s_find_bin kube-scheduler)" \
		--kubeconfig "$STATE/kube-scheduler.kubeconfig" \
		--authentication-kubeconfig "$STATE/kube-scheduler.kubeconfig" \
		--authorization-kubeconfig "$STATE/kube-scheduler.kubeconfig" \
		--bind-address 127.0.0.1 --secure-port "$SCHED_PORT" --leader-elect=false --v 1
	wait_ready kube-scheduler "healthy" curl -fsSk "https://127.0.0.1:$SCHED_PORT/healthz"

	log "starting kubelet (node $NODE_NAME on $NODE_IP:$KUBELET_PORT)"
	launch kubelet "$(k8s_find_bin kubelet)" \
		--config "$STATE/node/kubelet.yaml" \
		--kubeconfig "$STATE/node.kubeconfig" \
		--root-dir "$STATE/node/kubelet" \
		--hostname-override "$NODE_NAME" --node-ip "$NODE_IP" \
		--v 1
	wait_ready kubelet "healthy" curl -fsS "http://127.0.0.1:$KUBELET_HEALTHZ_PORT/healthz"

	log "starting kube-proxy (iptables)"
	launch kube-proxy "$(k8s_find_bin kube-proxy)" --config "$STATE/node/kube-proxy.yaml" --v 1
	wait_ready kube-proxy "healthy" curl -fsS "http://127.0.0.1:$PROXY_HEALTHZ_PORT/healthz"
	# kube-proxy puts its jumps first in FORWARD (and never moves them once there): put ours back
	# in front, so that no rule of its own lets a packet cross between the bridge and elsewhere.
	wait_ready kube-proxy "its FORWARD rules" iptables -w -C FORWARD -m comment --comment "kubernetes forwarding rules" -j KUBE-FORWARD
	node_forward_rules -D
	node_forward_rules -I

	log "starting CoreDNS on $NODE_IP:53 (cluster.local only; nothing forwarded)"
	launch coredns "$(k8s_find_bin coredns)" -conf "$STATE/node/Corefile"
	wait_ready coredns "ready" curl -fsS "http://127.0.0.1:$DNS_READY_PORT/ready"

	wait_ready kubelet "a Ready node" node_ready
}

# Stop pods and node processes, then undo the machine's side. Safe on a half-started node.
node_stop() {
	local f name p
	[[ -d "$STATE/node" ]] || return 0
	f="$STATE/pids/kubelet.pid"
	[[ -f "$f" ]] && stop_pid "$(cat "$f")" "$MARKER" kubelet 30 && rm -f "$f"
	# Every pod sandbox stopped through CRI: containers killed, CNI teardown (veth, address, netns).
	if [[ -f "$STATE/pids/containerd.pid" ]] && pid_is_ours "$(cat "$STATE/pids/containerd.pid")" "$MARKER" &&
		[[ -n "$(k8s_find_bin crictl)" ]]; then
		crictl_node rmp --all --force >/dev/null 2>&1 || log "crictl rmp --all failed; cleaning up by hand"
	fi
	for name in coredns kube-proxy kube-scheduler containerd; do
		f="$STATE/pids/$name.pid"
		[[ -f "$f" ]] || continue
		stop_pid "$(cat "$f")" "$MARKER" "$name"
		rm -f "$f"
	done
	[[ -n "$(k8s_find_bin kube-proxy)" && -f "$STATE/node/kube-proxy.yaml" ]] &&
		"$(k8s_find_bin kube-proxy)" --cleanup --config "$STATE/node/kube-proxy.yaml" >/dev/null 2>&1 || true
	# Leftovers of a crash: containerd's shims (their command line names our socket) and the
	# processes of the pods' cgroups (kubelet made /kubepods; cgroupfs driver).
	for p in $(pgrep -f "$STATE/node/" || true); do kill -KILL "$p" 2>/dev/null || true; done
	for f in /sys/fs/cgroup/*/kubepods; do
		[[ -d "$f" ]] || continue
		find "$f" -name cgroup.procs -exec cat {} + 2>/dev/null | xargs -r kill -KILL 2>/dev/null || true
		find "$f" -depth -type d -exec rmdir {} + 2>/dev/null || true
	done
	# Mounts under the state: Secret volumes (tmpfs), overlay snapshots, bind mounts.
	{ findmnt -rn -o TARGET | grep -F "$STATE/" || true; } | sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done
	node_network_down
}

# `load-image IMAGE`: an image of podman's storage into the node's containerd, under the name
# podman gives it (localhost/NAME:TAG for a local build).
node_load_image() {
	local image="$1" tmp name
	[[ -n "$image" ]] || die "usage: dev-cluster load-image IMAGE"
	[[ -S "$STATE/node/containerd.sock" ]] || die "no node is up; run: scripts/dev-cluster up --node"
	command -v podman >/dev/null || die "podman is needed (apt-get install podman)"
	name="$(podman image inspect --format '{{index .RepoTags 0}}' "$image" 2>/dev/null)" ||
		die "podman has no image $image (build it first, e.g. make image)"
	tmp="$(mktemp "$STATE/node/image.XXXXXX")"
	podman save --quiet --format docker-archive -o "$tmp" "$name" || {
		rm -f "$tmp"
		die "podman save $name failed"
	}
	ctr -a "$STATE/node/containerd.sock" -n k8s.io images import "$tmp" >/dev/null || {
		rm -f "$tmp"
		die "containerd could not import $name"
	}
	rm -f "$tmp"
	log "loaded $name into the node (use image: $name, imagePullPolicy: IfNotPresent or Never)"
	printf '%s\n' "$name"
}

# `volume NAMESPACE CLAIM [SIZE]`: a PersistentVolume for one claim (the node has no
# provisioner): a directory under the node's state, writable by any user (the pod's own user
# owns what it writes), bound to that claim only through its claimRef.
node_volume() {
	local ns="$1" claim="$2" size="${3:-1Gi}" dir name
	[[ -n "$ns" && -n "$claim" ]] || die "usage: dev-cluster volume NAMESPACE CLAIM [SIZE]"
	[[ -f "$STATE/with-node" ]] || die "no node is up; run: scripts/dev-cluster up --node"
	name="dev-$ns-$claim"
	name="${name:0:253}"
	dir="$STATE/node/volumes/$ns/$claim"
	mkdir -p "$dir"
	chmod 0777 "$dir"
	"$(k8s_find_bin kubectl)" --kubeconfig "$STATE/kubeconfig" apply -f - >/dev/null <<-YAML || die "could not create the PersistentVolume $name"
		apiVersion: v1
		kind: PersistentVolume
		metadata:
		  name: $name
		  labels: {loop.dev/dev-cluster-volume: "true", loop.dev/claim-namespace: $ns}
		spec:
		  capacity: {storage: $size}
		  accessModes: [ReadWriteOnce]
		  persistentVolumeReclaimPolicy: Retain
		  storageClassName: ""
		  claimRef: {namespace: $ns, name: $claim}
		  hostPath: {path: $dir, type: Directory}
		  nodeAffinity:
		    required:
		      nodeSelectorTerms:
		      - matchExpressions:
		        - {key: kubernetes.io/hostname, operator: In, values: [$NODE_NAME]}
	YAML
	log "PersistentVolume $name ($size, $dir) for the claim $ns/$claim"
	printf '%s\n' "$name"
}

# `leftovers`: what a node of this state directory left on the machine (after `down`, nothing):
# one line each, and a failure when there is any.
node_leftovers() {
	local found=() ns v4 v6 mounts pids
	# Captured first: `grep -q` ending a pipe early would fail it under pipefail.
	v4="$(iptables-save 2>/dev/null || true)"
	v6="$(ip6tables-save 2>/dev/null || true)"
	mounts="$(findmnt -rn -o TARGET 2>/dev/null || true)"
	pids="$(pgrep -f "$STATE/" || true)"
	ip link show "$NODE_BRIDGE" >/dev/null 2>&1 && found+=("the bridge $NODE_BRIDGE")
	grep -q -e 'KUBE-' -e "$NODE_FORWARD_COMMENT" <<<"$v4" && found+=("iptables rules (KUBE-* chains or $NODE_FORWARD_COMMENT)")
	grep -q 'KUBE-' <<<"$v6" && found+=("ip6tables KUBE-* chains")
	for ns in $(ls /var/run/netns 2>/dev/null | grep '^cni-' || true); do found+=("the network namespace $ns"); done
	[[ -n "$pids" ]] && found+=("processes: $(tr '\n' ' ' <<<"$pids")")
	grep -qF "$STATE/" <<<"$mounts" && found+=("mounts under $STATE")
	[[ "$(cat "$NODE_OWNER_FILE" 2>/dev/null || true)" == "$STATE" ]] && found+=("$NODE_OWNER_FILE")
	ls -d /sys/fs/cgroup/*/kubepods >/dev/null 2>&1 && found+=("kubepods cgroups")
	if ((${#found[@]})); then
		printf 'left over: %s\n' "${found[@]}"
		return 1
	fi
	echo "nothing left over"
}
