# shellcheck shell=bash
# Builds (or finds) cert-manager's controller, the peer of the operator benchmark.
#
# Sourced by scripts/peers, after lib/common.sh (log, die) and lib/k8s-build.sh (require_go).
# The binary and its CRDs land in a cache outside the repo, keyed by version:
#   $LOOP_PEERS_CACHE (default ~/.cache/loop-token-operator/peers)/cert-manager-v$CERT_MANAGER_VERSION/
#     bin/cert-manager-controller   crds/*.yaml
#
# Why not `go install`: the Go module proxy serves cert-manager's root module but not the
# controller's (`cmd/controller`, module .../controller-binary, which has
# `replace github.com/cert-manager/cert-manager => ../../`), and it refuses one dependency,
# github.com/Venafi/vcert/v5. So the tree comes from git (`git archive` of the tag), and the
# Venafi issuer is left out before `go build` in cmd/controller:
#   - its blank import in cmd/controller/app/start.go is deleted;
#   - internal/apis/config/controller/v1alpha1/defaults.go imports the two Venafi controller
#     packages only for their name constants: the imports are deleted and the names written as
#     the string values they hold ("certificaterequests-issuer-venafi",
#     "certificatesigningrequests-issuer-venafi"), so the default controller list is unchanged.
# No other file changes. Issuers of the Venafi type are then not served; the benchmark uses a
# SelfSigned Issuer.
#
# Where the git tree comes from: $CERT_MANAGER_GIT (a clone or bare mirror of
# https://github.com/cert-manager/cert-manager holding the tag), else a bare partial clone of
# that URL into the cache.

CERT_MANAGER_VERSION="${CERT_MANAGER_VERSION:-1.21.1}"
PEERS_CACHE="${LOOP_PEERS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/loop-token-operator/peers}"
CERT_MANAGER_HOME="$PEERS_CACHE/cert-manager-v$CERT_MANAGER_VERSION"
CERT_MANAGER_URL="https://github.com/cert-manager/cert-manager"

log_peers() {
	local LOG_TAG="${LOG_TAG:-peers} build"
	log "$@"
}

# The git directory holding the tag.
cert_manager_git() {
	local git="${CERT_MANAGER_GIT:-$PEERS_CACHE/cert-manager.git}"
	if ! git --git-dir="$git" rev-parse -q --verify "refs/tags/v$CERT_MANAGER_VERSION" >/dev/null 2>&1; then
		[[ -z "${CERT_MANAGER_GIT:-}" ]] ||
			die "CERT_MANAGER_GIT=$git has no tag v$CERT_MANAGER_VERSION"
		log_peers "cloning $CERT_MANAGER_URL (bare, blobs on demand) into $git"
		rm -rf "$git"
		git clone -q --bare --filter=blob:none "$CERT_MANAGER_URL" "$git" ||
			die "could not clone $CERT_MANAGER_URL; set CERT_MANAGER_GIT to a local clone holding v$CERT_MANAGER_VERSION"
	fi
	printf '%s\n' "$git"
}

# Leave the Venafi issuer out of the tree at $1 (see the header). Fails when the files no longer
# look as expected, rather than building something else.
cert_manager_drop_venafi() {
	local src="$1" start="$1/cmd/controller/app/start.go"
	local defaults="$1/internal/apis/config/controller/v1alpha1/defaults.go"
	grep -q '"github.com/cert-manager/cert-manager/pkg/issuer/venafi"' "$start" ||
		die "$start has no Venafi import: the patch does not fit v$CERT_MANAGER_VERSION"
	sed -i '\#_ "github.com/cert-manager/cert-manager/pkg/issuer/venafi"#d' "$start"
	if ! grep -q 'crvenaficontroller "' "$defaults" || ! grep -q 'csrvenaficontroller "' "$defaults"; then
		die "$defaults has no Venafi controller imports: the patch does not fit v$CERT_MANAGER_VERSION"
	fi
	sed -i -e '/crvenaficontroller "/d' -e '/csrvenaficontroller "/d' \
		-e 's/crvenaficontroller\.CRControllerName/"certificaterequests-issuer-venafi"/g' \
		-e 's/csrvenaficontroller\.CSRControllerName/"certificatesigningrequests-issuer-venafi"/g' \
		"$defaults"
	! grep -q 'pkg/issuer/venafi\|controller/certificate.*requests/venafi' "$start" "$defaults" || die "Venafi imports left in $start or $defaults"
}

cert_manager_build() {
	local git src ver="v$CERT_MANAGER_VERSION"
	require_go
	git="$(cert_manager_git)"
	src="$CERT_MANAGER_HOME/src"
	rm -rf "$src"
	mkdir -p "$src" "$CERT_MANAGER_HOME/bin" "$CERT_MANAGER_HOME/crds"
	log_peers "git archive $ver of $git"
	git --git-dir="$git" archive "$ver" | tar -x -C "$src" || die "git archive $ver failed"
	cert_manager_drop_venafi "$src"
	log_peers "go build cmd/controller (Venafi issuer left out; minutes the first time)"
	(
		cd "$src/cmd/controller" &&
			CGO_ENABLED=0 GOFLAGS="${GOFLAGS:-} -mod=mod" nice go build -trimpath \
				-ldflags "-s -w -X github.com/cert-manager/cert-manager/pkg/util.AppVersion=$ver -X github.com/cert-manager/cert-manager/pkg/util.AppGitCommit=$(git --git-dir="$git" rev-parse "$ver^{commit}")" \
				-o "$CERT_MANAGER_HOME/cert-manager-controller.new" .
	) || die "building cert-manager's controller $ver failed (see the go output above)"
	cp "$src"/deploy/crds/*.yaml "$CERT_MANAGER_HOME/crds/"
	# Last, so that a binary in bin/ means a finished build with its CRDs beside it.
	mv "$CERT_MANAGER_HOME/cert-manager-controller.new" "$CERT_MANAGER_HOME/bin/cert-manager-controller"
	rm -rf "$src"
}

# Path of the controller, or empty when it is not built.
cert_manager_find_bin() {
	local p="$CERT_MANAGER_HOME/bin/cert-manager-controller"
	[[ -x "$p" ]] && printf '%s\n' "$p"
	return 0
}
