# Coffer: common tasks. Needs only Go (and python3 for `make compare`).
GO       ?= go
BIN      := bin/coffer
PKGS     := ./...

.PHONY: all build install test test-full race lint fuzz bench compare demo demo-s3 demo-remote demo-ops clean

all: build

build:
	$(GO) build -o $(BIN) ./cmd/coffer

# coffer into $(go env GOBIN), or $(go env GOPATH)/bin when GOBIN is unset.
install:
	$(GO) install ./cmd/coffer

# The test command (README, .ci/run): vet, the whole suite, and the race
# detector over the concurrent packages.
test:
	$(GO) vet $(PKGS)
	$(GO) test -count=1 -timeout 25m $(PKGS)
	$(GO) test -count=1 -race -short ./engine/ ./engine/remote/ ./repo/... ./index/...

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)

# Each fuzz target for a short while (FUZZTIME=1m make fuzz for longer).
FUZZTIME ?= 10s
fuzz:
	@for pkg in $$($(GO) list ./...); do \
	  for f in $$($(GO) test -list 'Fuzz.*' $$pkg | grep ^Fuzz); do \
	    echo "== $$pkg $$f"; $(GO) test -run XXX -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg || exit 1; \
	  done; \
	done

bench:
	$(GO) test -run XXX -bench . -benchmem $(PKGS)

# Side by side with restic 0.18.1 and borg 1.2.4 (installed if missing) on the
# shared data set; SCALE=1 make compare for the full 1 GiB (default 0.25),
# PROFILE=smallfiles for a hosting server's many small files, SRC=/a/folder to
# race the tools on a folder of your own (only read, never written to).
# BASE=REV races Coffer at git revision REV beside this tree (before/after).
# ROUNDS, TOOLS, BENCH_TMP and more: see bench/compare/compare.py.
compare:
	python3 bench/compare/compare.py

demo: build
	./scripts/demo.sh

# Nine S3 drives on three local versitygw servers (one per rack); one server
# is stopped and the restore is still identical. Needs versitygw (.ci/run
# installs it; go install github.com/versity/versitygw/cmd/versitygw@v1.8.0).
demo-s3: build
	./scripts/demo-s3.sh

# Remote backups through coffer serve on loopback, with the operator's
# commands going through the server's admin socket while it runs.
demo-remote: build
	./scripts/demo-remote.sh

# Operations: coffer serve with metrics, alerts and weekly reports to a
# local Mailpit (go install github.com/axllent/mailpit@v1.33.1; .ci/run
# installs it) and a signed webhook; a drive folder removed, scrub finds
# the damage, /metrics shows the failed drive.
demo-ops: build
	./scripts/demo-ops.sh

clean:
	rm -rf bin
