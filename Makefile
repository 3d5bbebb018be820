# kitex-anyconn: run `make` (or `make help`) for the list of targets.
# Every tool is pinned in go.mod; nothing is installed globally.

MODULE  := github.com/anyconn/kitex-anyconn
BIN     := bin
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
GOFLAGS_BUILD := -trimpath -ldflags "-s -w -X main.version=$(VERSION)"
TEST_TIMEOUT ?= 270s

.DEFAULT_GOAL := help

.PHONY: help
help: ## List the targets.
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_-]+:.*## / {printf "  %-12s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: build
build: ## Build the echo, caller and devrun binaries into bin/.
	go build $(GOFLAGS_BUILD) -o $(BIN)/ ./services/echo ./services/caller ./internal/devrun

.PHONY: run
run: build ## Run an embedded etcd, echo and caller here (TRANSPORT=gonet|websocket|netpoll make run); Ctrl-C stops.
	$(BIN)/devrun -bin $(BIN)

.PHONY: test
test: ## Run every test with the race detector (includes the generated-code freshness check).
	go test -race -count=1 -timeout $(TEST_TIMEOUT) ./...

.PHONY: lint
lint: ## Run go vet and check formatting.
	go vet ./...
	@test -z "$$(gofmt -l $$(git ls-files '*.go' | grep -v '^kitex_gen/'))" || { gofmt -l $$(git ls-files '*.go' | grep -v '^kitex_gen/'); exit 1; }

.PHONY: bench
bench: ## Full benchmark, separate processes: every transport vs raw TCP (about 15 min); writes bench/results/full.{md,json}.
	go run ./bench/cmd/bench

.PHONY: bench-quick
bench-quick: ## Short benchmark (1 KiB, 1 and 16 callers, 3 rounds; under a minute); writes bench/results/quick.{md,json}.
	go run ./bench/cmd/bench -quick

.PHONY: gen
gen: ## Regenerate kitex_gen/ from idl/ with the pinned Kitex generator.
	go tool kitex -module $(MODULE) idl/echo.thrift

.PHONY: fmt
fmt: ## Format the Go code.
	gofmt -w $$(git ls-files '*.go' | grep -v '^kitex_gen/')

.PHONY: clean
clean: ## Remove built binaries.
	rm -rf $(BIN)
