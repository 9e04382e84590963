# walrelay: build, run and test against the local PostgreSQL and RabbitMQ.
#
#   make build      build bin/walrelay
#   make services   install, start and configure the local PostgreSQL and RabbitMQ
#   make run        services, build, migrate, then run the relay (ARGS=... for `walrelay run`)
#   make test       services, then every test with the race detector
#   make soak       services, then the soak test: relay under load while faults
#                   are injected (WALRELAY_SOAK_DURATION, WALRELAY_SOAK_RATE)
#   make vet        go vet
#   make lint       go vet and a gofmt check
#   make bench      bin/walrelay bench (ARGS=... passed through)
#   make clean      remove bin/

# Go from the official tarball lives in /usr/local/go/bin, which is often not on PATH.
export PATH := $(PATH):/usr/local/go/bin

GO  ?= go
BIN := bin/walrelay

# Integration tests share the local servers, and some of them restart or cut
# connections to those servers, so packages run one at a time (-p 1).
TEST_FLAGS ?= -race -count=1 -p 1 -timeout 12m

# The local server as scripts/services.sh prepares it; override for another.
PG_URL ?= postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable

ARGS ?=
MIGRATE_ARGS ?=

.PHONY: build services run test soak vet lint bench clean

build:
	$(GO) build -o $(BIN) ./cmd/walrelay

services:
	bash scripts/services.sh

run: services build
	$(BIN) migrate --pg-url '$(PG_URL)' $(MIGRATE_ARGS)
	$(BIN) run --pg-url '$(PG_URL)' --log-format console $(ARGS)

test: services
	$(GO) test $(TEST_FLAGS) ./...

# The soak test is behind the build tag soak, so make test skips it.
soak: services
	$(GO) test -tags soak -count=1 -v -timeout 30m ./soak/

vet:
	$(GO) vet ./...

lint: vet
	@unformatted="$$(gofmt -l .)"; \
	if [ -n "$$unformatted" ]; then \
		echo "lint: run gofmt -w on these files:"; echo "$$unformatted"; exit 1; \
	fi

bench: build
	$(BIN) bench $(ARGS)

clean:
	rm -rf bin
