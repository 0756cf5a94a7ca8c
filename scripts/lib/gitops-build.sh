# shellcheck shell=bash
# Builds (or finds) the GitOps tools the tests run: Flux's source-controller and
# kustomize-controller, and the Argo CD Lua runner (tests/argocd/lua-runner, on gopher-lua).
#
# Sourced by scripts/gitops-tools, after lib/common.sh (log, die) and lib/k8s-build.sh
# (require_go). Everything lands in a cache outside the repo, keyed by version, so the cold build
# happens once per machine:
#   $LOOP_GITOPS_CACHE (default ~/.cache/loop-token-operator/gitops)/
#     flux-v$FLUX_SOURCE_VERSION-v$FLUX_KUSTOMIZE_VERSION/{bin,crds}/   the controllers and their CRDs
#     argocd-lua-<hash of the runner's sources>/argocd-lua              the Lua runner
#
# Flux's controllers are `package main` modules served by the Go module proxy. Like
# k8s.io/kubernetes they carry `replace` lines that a dependent module does not inherit: each is
# built in a wrapper module that requires it and repeats every replace of its go.mod that points
# to a published module (those into its own ./api are dropped: the api module is published at
# the same version). The list is derived from the tag's own go.mod, never typed by hand.

# Flux v2.9's controllers: the newest that build with Go 1.26 (1.10.x needs Go 1.27).
FLUX_SOURCE_VERSION="${FLUX_SOURCE_VERSION:-1.9.0}"
FLUX_KUSTOMIZE_VERSION="${FLUX_KUSTOMIZE_VERSION:-1.9.6}"
GITOPS_CACHE="${LOOP_GITOPS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/loop-token-operator/gitops}"
FLUX_HOME="$GITOPS_CACHE/flux-v${FLUX_SOURCE_VERSION}-v${FLUX_KUSTOMIZE_VERSION}"
LUA_RUNNER_SRC="$REPO/tests/argocd/lua-runner"

# The replace directives of a go.mod that point to another module (not to a local path), one per
# line as `OLD [VERSION] => NEW VERSION`, from both the one-line and the block form.
gomod_published_replaces() {
	awk '
		/^replace[ \t]*\($/ { block = 1; next }
		block && /^\)/ { block = 0; next }
		{ line = $0; sub(/\/\/.*/, "", line) }
		block || line ~ /^replace[ \t]/ {
			sub(/^replace[ \t]+/, "", line)
			n = split(line, f, "=>")
			if (n != 2) next
			split(f[2], rhs, " ")
			if (rhs[1] ~ /^\.\.?\//) next
			gsub(/^[ \t]+|[ \t]+$/, "", f[1]); gsub(/^[ \t]+|[ \t]+$/, "", f[2])
			print f[1] " => " f[2]
		}
	' "$1"
}

# `[gitops-tools build] MSG` on stderr.
log_gitops() {
	local LOG_TAG="${LOG_TAG:-gitops-tools} build"
	log "$@"
}

# Build one Flux controller (`source-controller` or `kustomize-controller`) at VERSION into
# $FLUX_HOME/bin, and copy its CRDs into $FLUX_HOME/crds.
flux_build_controller() {
	local name="$1" version="$2" module="github.com/fluxcd/$1"
	local dir="$FLUX_HOME/src/$name" gomod replaces src
	require_go
	mkdir -p "$dir" "$FLUX_HOME/bin" "$FLUX_HOME/crds"
	log_gitops "fetching $module v$version go.mod"
	(cd "$dir" && go mod download -json "$module@v$version" >"$dir/download.json") ||
		die "could not download $module@v$version from the Go module proxy ($(go env GOPROXY))"
	gomod="$(jq -r .GoMod "$dir/download.json")"
	[[ -f "$gomod" ]] || die "go mod download gave no go.mod for $module@v$version"
	replaces="$(gomod_published_replaces "$gomod")"
	{
		printf 'module loop-token-operator.local/%s-build\n\ngo %s\n\n' "$name" "$(awk '$1 == "go" {print $2; exit}' "$gomod")"
		printf 'require %s v%s\n' "$module" "$version"
		if [[ -n "$replaces" ]]; then
			printf '\nreplace (\n'
			while read -r r; do printf '\t%s\n' "$r"; done <<<"$replaces"
			printf ')\n'
		fi
	} >"$dir/go.mod"
	log_gitops "$name: $(grep -c . <<<"$replaces") replace lines from its go.mod; go build $module (minutes the first time)"
	(
		cd "$dir" &&
			GOFLAGS=-mod=mod go get "$module@v$version" &&
			CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath -ldflags "-s -w" -o "$dir/$name" "$module"
	) || die "building $name v$version failed (see the go output above)"
	src="$(jq -r .Dir "$dir/download.json")"
	cp "$src"/config/crd/bases/*.yaml "$FLUX_HOME/crds/"
	chmod u+w "$FLUX_HOME"/crds/*.yaml
	# Last, so that a binary in bin/ means a finished build with its CRDs beside it.
	mv "$dir/$name" "$FLUX_HOME/bin/$name"
}

# A digest of the Lua runner's sources: a changed runner is rebuilt into a new directory.
lua_runner_home() {
	local sum
	sum="$(cat "$LUA_RUNNER_SRC/go.mod" "$LUA_RUNNER_SRC/go.sum" "$LUA_RUNNER_SRC"/*.go | sha256sum | cut -c1-12)"
	printf '%s\n' "$GITOPS_CACHE/argocd-lua-$sum"
}

lua_build_runner() {
	local home
	require_go
	home="$(lua_runner_home)"
	log_gitops "go build tests/argocd/lua-runner (gopher-lua, as Argo CD runs it)"
	mkdir -p "$home"
	(cd "$LUA_RUNNER_SRC" && CGO_ENABLED=0 go build -mod=readonly -trimpath -ldflags "-s -w" -o "$home/argocd-lua.new" .) ||
		die "building the Lua runner failed (see the go output above)"
	mv "$home/argocd-lua.new" "$home/argocd-lua"
}

# Path of a tool, or empty when it is not built.
gitops_find_bin() {
	local p
	case "$1" in
	source-controller | kustomize-controller) p="$FLUX_HOME/bin/$1" ;;
	argocd-lua) p="$(lua_runner_home)/argocd-lua" ;;
	*) die "unknown tool $1 (source-controller, kustomize-controller, argocd-lua)" ;;
	esac
	[[ -x "$p" ]] && printf '%s\n' "$p"
	return 0
}

# Ensure every tool exists; build only what is missing.
gitops_ensure_binaries() {
	local start=$SECONDS
	[[ -n "$(gitops_find_bin source-controller)" ]] || flux_build_controller source-controller "$FLUX_SOURCE_VERSION"
	[[ -n "$(gitops_find_bin kustomize-controller)" ]] || flux_build_controller kustomize-controller "$FLUX_KUSTOMIZE_VERSION"
	[[ -n "$(gitops_find_bin argocd-lua)" ]] || lua_build_runner
	if ((SECONDS - start > 2)); then
		log_gitops "built in $((SECONDS - start)) s into $GITOPS_CACHE ($(du -sh "$GITOPS_CACHE" | cut -f1))"
	fi
}
