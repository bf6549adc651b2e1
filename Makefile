# service_latency — see README.md
GO        ?= go
BIN       := bin
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT    ?= $(shell git rev-parse --short HEAD 2>/dev/null)
LDFLAGS   := -X main.version=$(VERSION) -X main.commit=$(COMMIT)
SUDO      := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: all build run test unit lint deps clean docs

all: build

build: $(BIN)/service_latency $(BIN)/latency_target

$(BIN)/service_latency: FORCE
	$(GO) build -ldflags "$(LDFLAGS)" -o $@ ./cmd/service_latency

$(BIN)/latency_target: FORCE
	$(GO) build -o $@ ./cmd/latency_target

FORCE:

## run: start the built-in loopback target and print line protocol every second (Ctrl-C stops both)
run: build
	@$(BIN)/latency_target -listen 127.0.0.1:18080 -tcp 127.0.0.1:18081 -delay 2ms & \
	  tpid=$$!; trap 'kill $$tpid 2>/dev/null' EXIT INT TERM; \
	  sleep 0.3; \
	  sleep infinity | $(BIN)/service_latency -config examples/run.conf -poll_interval 1s

## deps: install what the tests need when it is missing (Debian packages)
deps:
	@missing=""; \
	command -v redis-server >/dev/null 2>&1 || missing="$$missing redis-server"; \
	command -v influxd >/dev/null 2>&1 || missing="$$missing influxdb"; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing >/dev/null; \
	fi

## test: the whole suite, race detector on
test: deps lint unit

unit: build
	$(GO) test -race -count=1 -timeout 20m ./...

lint:
	@out=$$(gofmt -l cmd plugins); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

clean:
	rm -rf $(BIN)

## docs: copy the plugin's sample.conf to the root and into its README
docs:
	cp plugins/inputs/service_latency/sample.conf sample.conf
	python3 -c 'import re,sys; p="plugins/inputs/service_latency/README.md"; s=open(p).read(); c=open("sample.conf").read(); a=s.index("```toml @sample.conf\n")+21; b=s.index("```\n",a); open(p,"w").write(s[:a]+c+s[b:])'
