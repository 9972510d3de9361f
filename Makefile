# Portcullis: `make run` starts the gateway on conf/portcullis.yaml with the demo MCP upstream;
# `make test` runs every check CI runs. Both install what they need on a fresh machine.

.PHONY: run test system-deps lint unit e2e bench-build bench-load reload-load

# pingora-core builds zlib-ng with cmake.
system-deps:
	@command -v cmake >/dev/null 2>&1 || { \
	  echo "installing cmake (needed to build pingora-core)"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq cmake >/dev/null; }

run: system-deps
	cargo build --release --bin portcullis --bin mock-mcp
	scripts/run-demo

lint: system-deps
	cargo fmt --all -- --check
	cargo clippy --all-targets -- -D warnings

# Unit tests, benches and examples once; the integration suite (`--test '*'`) on every path:
# HTTP/1 on the gateway's engine, HTTP/1 on pingora-proxy, HTTP/2 over TLS (tests/support/path.rs).
unit: system-deps
	cargo test --all-targets
	PORTCULLIS_TEST_PATH=h1-pingora cargo test --test '*'
	PORTCULLIS_TEST_PATH=h2 cargo test --test '*'

bench-build: system-deps
	cargo bench --no-run

e2e: system-deps
	tests/e2e/run

test: lint unit bench-build e2e

# Performance side by side with nginx (writes load/results/<date>.md).
bench-load: system-deps
	load/run

# 20 s of load through 5 reloads and a binary upgrade (writes load/results/reload-upgrade-<date>.md).
reload-load: system-deps
	load/reload-under-load
