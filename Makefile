# The two commands of the README: `make demo` and `make test`. Both install what is
# missing first (scripts/setup.sh) and are safe to run again.
CARGO ?= $(shell command -v cargo 2>/dev/null || echo $(HOME)/.cargo/bin/cargo)

KIT_PY = .local/kit-venv/bin/python
# `make build ARCH=arm64` / `make deb ARCH=arm64`: a Jetson (JetPack 5, 6 and 7) build, cross-built here.
ARCH ?= $(shell dpkg --print-architecture 2>/dev/null || echo amd64)

.PHONY: demo test setup build lint clean deb kit-setup kit-test kit-train

setup:
	@bash scripts/setup.sh

build: setup
ifeq ($(ARCH),arm64)
	@bash scripts/build-arm64.sh
else
	$(CARGO) build --release --locked
endif

demo: build
	@bash scripts/demo.sh

# Every stage timed, then a summary (scripts/test.sh): binaries, tests passed, tests that
# could not run here, the kit's tests.
test:
	@CARGO=$(CARGO) bash scripts/test.sh

# The package's binary is a zig build against glibc 2.31 (Ubuntu 20.04 on), for either
# architecture: a release build of its own, so only here, never in `make test`.
deb: setup
ifeq ($(ARCH),arm64)
	@bash scripts/build-arm64.sh
else
	@bash scripts/build-amd64.sh
endif
	@ARCH=$(ARCH) bash scripts/build-deb.sh

# The CLEF kit (engines/kit): Debian's CPU PyTorch and ONNX Runtime's Python package.
kit-setup:
	@bash scripts/setup-kit.sh

kit-test: kit-setup
	cd engines/kit && ../../$(KIT_PY) -m unittest discover -s tests

# Retrains engines/context-bias-demo and engines/context-multilabel-demo from nothing (fixed
# seeds, one thread, bit-for-bit repeatable; about 17 and 9 minutes here).
kit-train: build kit-setup
	$(KIT_PY) engines/kit/train_demo.py
	$(KIT_PY) engines/kit/train_multilabel.py

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --release --locked --all-targets -- -D warnings

clean:
	$(CARGO) clean
	rm -rf .local/demo .local/state
