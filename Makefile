# The two commands of the README: `make demo` and `make test`. Both install what is
# missing first (scripts/setup.sh) and are safe to run again.
CARGO ?= $(shell command -v cargo 2>/dev/null || echo $(HOME)/.cargo/bin/cargo)

.PHONY: demo test setup build lint clean deb

setup:
	@bash scripts/setup.sh

build: setup
	$(CARGO) build --release --locked

demo: build
	@bash scripts/demo.sh

test: build
	$(CARGO) test --release --locked
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --release --locked --all-targets -- -D warnings

deb: build
	@bash scripts/build-deb.sh

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --release --locked --all-targets -- -D warnings

clean:
	$(CARGO) clean
	rm -rf .local/demo .local/state
