# shellcheck shell=bash
# Builds (or finds) the control-plane binaries the project tests against.
#
# Sourced by scripts/dev-cluster, after lib/common.sh (log, die). Everything lands in a cache
# outside the repo, keyed by version, so the long cold build happens once per machine:
#   $LOOP_K8S_CACHE (default ~/.cache/loop-token-operator/k8s/v$K8S_VERSION)/bin/{etcd,kube-apiserver,...}
#
# Where binaries come from, in order:
#   1. $KUBEBUILDER_ASSETS, when it holds etcd and kube-apiserver (the envtest convention);
#      anything it lacks (kube-controller-manager, kubectl, helm) is still built;
#   2. the cache above;
#   3. `go build` from the official Go modules through the Go module proxy.

K8S_VERSION="${K8S_VERSION:-1.37.2}"
ETCD_VERSION="${ETCD_VERSION:-3.6.16}"
HELM_VERSION="${HELM_VERSION:-3.22.0}"
K8S_CACHE="${LOOP_K8S_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/loop-token-operator/k8s/v${K8S_VERSION}}"
K8S_BIN="$K8S_CACHE/bin"

# The staging modules of k8s.io/kubernetes: its go.mod requires each at v0.0.0 and replaces it
# with ./staging/src/k8s.io/<name>. A module depending on it must replace each with the published
# v0.<minor>.<patch>. The list is derived from the tag's own go.mod, never typed by hand.
k8s_staging_modules() {
	local gomod="$1"
	awk '$2 == "=>" && $3 ~ /^\.\/staging\/src\// {print $1}' "$gomod"
}

# `[dev-cluster build] MSG` on stderr.
log_build() {
	local LOG_TAG="${LOG_TAG:-dev-cluster} build"
	log "$@"
}

require_go() {
	if ! command -v go >/dev/null 2>&1; then
		die "no Go toolchain found and KUBEBUILDER_ASSETS does not hold the binaries.
  Either install Go >= 1.26 (https://go.dev/doc/install, or 'apt-get install golang-go' where
  that is new enough), or point KUBEBUILDER_ASSETS at a directory holding etcd, kube-apiserver,
  kube-controller-manager and kubectl (for example: export KUBEBUILDER_ASSETS=\$(setup-envtest use -p path ${K8S_VERSION}))."
	fi
}

# Path of a binary, preferring KUBEBUILDER_ASSETS, then the cache. Empty when absent.
k8s_find_bin() {
	local name="$1"
	if [[ -n "${KUBEBUILDER_ASSETS:-}" && -x "$KUBEBUILDER_ASSETS/$name" ]]; then
		printf '%s\n' "$KUBEBUILDER_ASSETS/$name"
	elif [[ -x "$K8S_BIN/$name" ]]; then
		printf '%s\n' "$K8S_BIN/$name"
	fi
}

# Build one Go module directory under the cache: $1 = dir name, $2 = go.mod body.
k8s_prepare_module() {
	local dir="$K8S_CACHE/src/$1"
	mkdir -p "$dir"
	printf '%s\n' "$2" >"$dir/go.mod"
	printf '%s\n' "$dir"
}

k8s_build_kubernetes() {
	local names=("$@")
	local dir mod staging ldflags pkgs=()
	require_go
	log_build "fetching k8s.io/kubernetes v${K8S_VERSION} go.mod"
	dir="$K8S_CACHE/src/kubernetes"
	mkdir -p "$dir"
	(cd "$dir" && go mod download -json "k8s.io/kubernetes@v${K8S_VERSION}" >"$dir/download.json") ||
		die "could not download k8s.io/kubernetes@v${K8S_VERSION} from the Go module proxy ($(go env GOPROXY))"
	mod="$(jq -r .GoMod "$dir/download.json")"
	[[ -f "$mod" ]] || die "go mod download gave no go.mod for k8s.io/kubernetes@v${K8S_VERSION}"
	staging="$(k8s_staging_modules "$mod")"
	[[ -n "$staging" ]] || die "found no staging replaces in $mod"
	local minor="${K8S_VERSION#*.}"
	local pub="v0.${minor}" # 1.37.2 -> v0.37.2
	{
		printf 'module loop-token-operator.local/k8s-build\n\ngo %s\n\n' "$(awk '$1 == "go" {print $2; exit}' "$mod")"
		printf 'require k8s.io/kubernetes v%s\n\n' "$K8S_VERSION"
		printf 'replace (\n'
		while read -r m; do printf '\t%s => %s %s\n' "$m" "$m" "$pub"; done <<<"$staging"
		printf ')\n'
	} >"$dir/go.mod"
	log_build "$(wc -l <<<"$staging") staging modules replaced with their published $pub"
	for n in "${names[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$n"); done
	ldflags="-s -w -X k8s.io/component-base/version.gitVersion=v${K8S_VERSION}"
	ldflags+=" -X k8s.io/component-base/version.gitMajor=${K8S_VERSION%%.*}"
	ldflags+=" -X k8s.io/component-base/version.gitMinor=$(cut -d. -f2 <<<"$K8S_VERSION")"
	ldflags+=" -X k8s.io/component-base/version.gitTreeState=clean"
	ldflags+=" -X k8s.io/client-go/pkg/version.gitVersion=v${K8S_VERSION}"
	(
		cd "$dir" &&
			log_build "resolving dependencies (go mod tidy; a large download the first time)" &&
			GOFLAGS=-mod=mod go get "k8s.io/kubernetes@v${K8S_VERSION}" &&
			for p in "${pkgs[@]}"; do
				log_build "go build $p (the first build takes minutes)"
				CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath -ldflags "$ldflags" -o "$K8S_BIN/" "$p" || exit 1
			done
	) || die "building ${names[*]} failed (see the go output above)"
}

k8s_build_etcd() {
	require_go
	local dir
	dir="$(k8s_prepare_module etcd "module loop-token-operator.local/etcd-build

go 1.25

require go.etcd.io/etcd/server/v3 v${ETCD_VERSION}")"
	log_build "go build go.etcd.io/etcd/server/v3 v${ETCD_VERSION}"
	(cd "$dir" && GOFLAGS=-mod=mod go get "go.etcd.io/etcd/server/v3@v${ETCD_VERSION}" &&
		CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath -ldflags "-s -w" -o "$K8S_BIN/etcd" go.etcd.io/etcd/server/v3) ||
		die "building etcd v${ETCD_VERSION} failed (see the go output above)"
}

k8s_build_helm() {
	require_go
	local dir
	dir="$(k8s_prepare_module helm "module loop-token-operator.local/helm-build

go 1.25

require helm.sh/helm/v3 v${HELM_VERSION}")"
	log_build "go build helm.sh/helm/v3/cmd/helm v${HELM_VERSION}"
	(cd "$dir" && GOFLAGS=-mod=mod go get "helm.sh/helm/v3@v${HELM_VERSION}" &&
		CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath \
			-ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=v${HELM_VERSION}" \
			-o "$K8S_BIN/helm" helm.sh/helm/v3/cmd/helm) ||
		die "building helm v${HELM_VERSION} failed (see the go output above)"
}

# Ensure every binary exists; build only what is missing. Prints a summary with timing.
k8s_ensure_binaries() {
	local want_helm="${1:-yes}"
	local start=$SECONDS missing_k8s=()
	mkdir -p "$K8S_BIN"
	[[ -n "$(k8s_find_bin etcd)" ]] || k8s_build_etcd
	for n in kube-apiserver kube-controller-manager kubectl; do
		[[ -n "$(k8s_find_bin "$n")" ]] || missing_k8s+=("$n")
	done
	((${#missing_k8s[@]} == 0)) || k8s_build_kubernetes "${missing_k8s[@]}"
	if [[ "$want_helm" == yes && -z "$(k8s_find_bin helm)" ]]; then k8s_build_helm; fi
	if ((SECONDS - start > 2)); then
		log_build "built in $((SECONDS - start)) s into $K8S_BIN ($(du -sh "$K8S_BIN" | cut -f1))"
	fi
}
