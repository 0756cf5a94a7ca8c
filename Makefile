# Entry points; each target is a thin wrapper over a script in scripts/.
.PHONY: test image bench bench-quick bench-store bench-operator bench-cert-manager demo demo-down build cluster-up cluster-down postgres-up postgres-down store

test: ## Run every test (starts and stops the local control plane and PostgreSQL as needed)
	scripts/test

demo: ## Bring up the control plane, the store and the operator, and walk through a token's life
	scripts/demo

demo-down: ## Stop everything the demo started
	scripts/demo down

bench: ## Store and operator benchmarks, and cert-manager side by side (see docs/benchmarks.md); results in bench-results/
	scripts/bench

bench-quick: ## A quick variant of both
	scripts/bench --quick

bench-store: ## Only the store benchmarks
	scripts/bench store

bench-operator: ## Only the operator benchmarks (against the local control plane)
	scripts/bench operator

bench-cert-manager: ## Only cert-manager side by side with the operator (builds cert-manager the first time)
	scripts/bench cert-manager

image: ## Build the container image loop-token-operator:dev with podman (static binaries FROM scratch; nothing pulled)
	scripts/image

build: ## Build the binaries
	cargo build --release --locked

cluster-up: ## Start the local Kubernetes control plane (builds it the first time)
	scripts/dev-cluster up

cluster-down: ## Stop it and remove its state
	scripts/dev-cluster down

postgres-up:
	scripts/dev-postgres up

postgres-down:
	scripts/dev-postgres down

store: ## Run loop-store locally on SQLite with throwaway credentials
	LOOP_STORE_ADMIN_TOKEN=dev-admin-credential-0000 LOOP_STORE_INTROSPECT_TOKEN=dev-introspect-credential-0 \
		cargo run --bin loop-store -- serve
