# kitex-anyconn: run `make` (or `make help`) for the list of targets.
# Every tool is pinned (go.mod, tools/go.mod, tools/tilt/go.mod) and built into bin/;
# nothing is installed globally.

MODULE  := github.com/anyconn/kitex-anyconn
BIN     := bin
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
GOFLAGS_BUILD := -trimpath -ldflags "-s -w -X main.version=$(VERSION)"
TEST_TIMEOUT ?= 270s

.DEFAULT_GOAL := help

# Pinned tools, built from tools/go.mod (and tools/tilt/go.mod) into bin/ on first use.
HELM      := $(BIN)/helm
HELM_DOCS := $(BIN)/helm-docs
KIND      := $(BIN)/kind
CT        := $(BIN)/ct
KUBE_SCORE := $(BIN)/kube-score
TILT      := $(BIN)/tilt
TRAEFIK   := $(BIN)/traefik
PROMETHEUS := $(BIN)/prometheus
CHART     := charts/kitex-anyconn
# Images: `make images IMAGE_REGISTRY=ghcr.io/you IMAGE_TAG=1.2.3`.
IMAGE_REGISTRY ?=
IMAGE_TAG      ?= $(shell sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}$$/\1/p' $(CHART)/Chart.yaml)
IMAGE_ARCH     ?= $(shell go env GOARCH)
IMAGE_PREFIX   := $(if $(IMAGE_REGISTRY),$(IMAGE_REGISTRY)/,)kitex-anyconn

.PHONY: help
help: ## List the targets.
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_-]+:.*## / {printf "  %-15s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: build
build: ## Build the echo, caller and devrun binaries into bin/.
	go build $(GOFLAGS_BUILD) -o $(BIN)/ ./services/echo ./services/caller ./internal/devrun

.PHONY: run
run: build ## Run an embedded etcd, echo and caller here (TRANSPORT=websocket make run picks another transport); Ctrl-C stops.
	$(BIN)/devrun -bin $(BIN)

.PHONY: test
test: ## Every test: the Go tests (test-go) and the chart's (test-chart), side by side.
	@# Both mostly wait (processes, sockets, timers): run them at once (the
	@# chart's build their pinned tools into bin/ the first time), and fail if
	@# either fails.
	$(MAKE) --no-print-directory test-go & go=$$!; \
	  $(MAKE) --no-print-directory test-chart; rc=$$?; \
	  wait $$go || rc=1; exit $$rc

.PHONY: test-go
test-go: ## The Go tests with the race detector: the root module and transport/, side by side.
	cd transport && go test -race -count=1 -timeout $(TEST_TIMEOUT) ./... & lib=$$!; \
	  go test -race -count=1 -timeout $(TEST_TIMEOUT) ./...; rc=$$?; \
	  wait $$lib || rc=1; exit $$rc

.PHONY: test-chart
test-chart: $(HELM) $(HELM_DOCS) $(CT) $(KUBE_SCORE) $(TILT) ## The chart and Tiltfile tests (ct lint, kube-score too), and tools/promcheck (the dashboard's and alerts' PromQL against the services' /metrics), with the pinned tools (built into bin/ the first time).
	cd tools && KITEX_ANYCONN_TOOLS=$(CURDIR)/$(BIN) go test -count=1 -timeout 120s ./...
	@# A module of its own (Prometheus' PromQL parser): builds echo, caller and devrun
	@# and runs them as `make run` does (its fixed ports free), over netpoll and yamux.
	cd tools/promcheck && KITEX_ANYCONN_TOOLS=$(CURDIR)/$(BIN) go test -count=1 -timeout 300s ./...

.PHONY: tools
tools: $(HELM) $(HELM_DOCS) $(CT) $(KUBE_SCORE) $(KIND) $(TILT) ## Build the pinned helm, helm-docs, ct, kube-score, kind and tilt into bin/ (once).

# helm stamps the Kubernetes version it assumes (for kubeVersion checks and lint)
# from its client-go, as helm's own Makefile does.
$(HELM): tools/go.mod tools/go.sum
	cd tools && minor=$$(go list -f '{{.Version}}' -m k8s.io/client-go | cut -d. -f2) && \
	  CGO_ENABLED=0 go build -trimpath -o $(CURDIR)/$@ -ldflags "-s -w \
	  -X helm.sh/helm/v3/internal/version.version=$$(go list -f '{{.Version}}' -m helm.sh/helm/v3) \
	  -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=$$minor \
	  -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$$minor" \
	  helm.sh/helm/v3/cmd/helm

$(HELM_DOCS): tools/go.mod tools/go.sum
	cd tools && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o $(CURDIR)/$@ github.com/norwoodj/helm-docs/cmd/helm-docs

# chart-testing's ct (`ct lint`, run by TestChartTestingLint with ct.yaml; it calls bin/helm).
$(CT): tools/go.mod tools/go.sum
	cd tools && CGO_ENABLED=0 go build -trimpath -o $(CURDIR)/$@ -ldflags "-s -w \
	  -X github.com/helm/chart-testing/v3/ct/cmd.Version=$$(go list -f '{{.Version}}' -m github.com/helm/chart-testing/v3)" \
	  github.com/helm/chart-testing/v3/ct

# kube-score checks the rendered manifests (TestKubeScore). It is the manifest linter
# here because kube-linter is not served by the Go module proxy and kubeconform needs
# JSON schemas downloaded from the network. Its module is its own: kube-score v1.20.0
# imports k8s.io/api/autoscaling/v2beta1 and v2beta2, which the k8s.io/api that helm
# needs in tools/go.mod no longer has.
$(KUBE_SCORE): tools/kube-score/go.mod tools/kube-score/go.sum
	cd tools/kube-score && CGO_ENABLED=0 go build -trimpath -o $(CURDIR)/$@ -ldflags "-s -w \
	  -X main.version=$$(go list -f '{{.Version}}' -m github.com/zegl/kube-score)" \
	  github.com/zegl/kube-score/cmd/kube-score

$(KIND): tools/go.mod tools/go.sum
	cd tools && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o $(CURDIR)/$@ sigs.k8s.io/kind

$(TILT): tools/tilt/go.mod tools/tilt/go.sum tools/tilt/build.sh
	tools/tilt/build.sh $(CURDIR)/$@

# The ingress controller of make e2e-kind (about 8 min the first time).
$(TRAEFIK): tools/traefik/go.mod tools/traefik/go.sum tools/traefik/build.sh
	tools/traefik/build.sh $(CURDIR)/$@

# The Prometheus server of make e2e-kind (about 3.5 min the first time; no web UI, only
# the Kubernetes service discovery among the optional ones: tools/prometheus/build.sh).
$(PROMETHEUS): tools/prometheus/go.mod tools/prometheus/go.sum tools/prometheus/build.sh
	tools/prometheus/build.sh $(CURDIR)/$@

.PHONY: tools-helm
tools-helm: $(HELM)

.PHONY: chart-lint
chart-lint: $(HELM) $(CT) $(KUBE_SCORE) ## helm lint --strict for every transport, ct lint (ct.yaml) and kube-score (TestLintStrict, TestChartTestingLint, TestKubeScore).
	cd tools && KITEX_ANYCONN_TOOLS=$(CURDIR)/$(BIN) go test -count=1 -run '^(TestLintStrict|TestChartTestingLint|TestKubeScore)$$' ./charttest

.PHONY: chart-docs
chart-docs: $(HELM_DOCS) ## Regenerate the chart README's values table from the comments in values.yaml.
	$(HELM_DOCS) --chart-search-root charts --template-files README.md.gotmpl --sort-values-order file

.PHONY: images
images: image-binaries ## Build the echo, caller and etcd images (static binaries FROM scratch; starts dockerd here if needed).
	deploy/docker/dockerd.sh
	for c in echo caller etcd; do \
	  DOCKER_BUILDKIT=0 docker build -q -f deploy/docker/prebuilt.Dockerfile --target $$c --build-arg VERSION=$(VERSION) \
	    -t $(IMAGE_PREFIX)/$$c:$(IMAGE_TAG) $(BIN)/image >/dev/null || exit 1; \
	done
	@docker image ls --format '{{.Repository}}:{{.Tag}}\t{{.Size}}' | grep '^$(IMAGE_PREFIX)/.*:$(IMAGE_TAG)\b'

.PHONY: image-binaries
image-binaries: ## Compile the static linux binaries of the images into bin/image/ (make images and Tilt use it).
	mkdir -p $(BIN)/image/data
	CGO_ENABLED=0 GOOS=linux GOARCH=$(IMAGE_ARCH) go build $(GOFLAGS_BUILD) -o $(BIN)/image/ ./services/echo ./services/caller
	CGO_ENABLED=0 GOOS=linux GOARCH=$(IMAGE_ARCH) go build -trimpath -ldflags "-s -w" -o $(BIN)/image/etcd go.etcd.io/etcd/server/v3
	@for f in /etc/ssl/certs/ca-certificates.crt /etc/ssl/cert.pem /etc/pki/tls/certs/ca-bundle.crt; do \
	  if [ -f $$f ]; then cp $$f $(BIN)/image/ca-certificates.crt; exit 0; fi; done; \
	  echo "no CA bundle found on this machine for the images" >&2; exit 1

.PHONY: e2e-kind
e2e-kind: $(HELM) $(KIND) $(TRAEFIK) $(PROMETHEUS) ## Every transport end to end in an offline kind cluster, then tilt ci (deploy/kind; E2E_FLAGS=-keep keeps it).
	go run ./deploy/kind/e2e $(E2E_FLAGS)

.PHONY: chaos
chaos: ## The fault tests with long outages (etcd down 30 s…), real processes on loopback; prints the recovery figures.
	@mkdir -p $(BIN); KITEX_ANYCONN_CHAOS=1 go test -race -count=1 -timeout 10m -v -run 'TestEtcd|TestSIGKILL|TestEchoDeregisters' \
	  ./test/e2e/ > $(BIN)/chaos.log 2>&1; rc=$$?; \
	  grep -E '^(=== RUN|--- |ok|FAIL|\s+\S+_test.go:[0-9]+: report)' $(BIN)/chaos.log; \
	  echo "full output: $(BIN)/chaos.log"; exit $$rc

.PHONY: lint
lint: ## Run go vet and check formatting.
	go vet ./...
	cd transport && go vet ./...
	@test -z "$$(gofmt -l $$(git ls-files '*.go' | grep -v '^kitex_gen/'))" || { gofmt -l $$(git ls-files '*.go' | grep -v '^kitex_gen/'); exit 1; }

.PHONY: bench
bench: ## Full benchmark, separate processes: every transport vs raw TCP and a raw echo over the tunnel (about 22 min); writes bench/results/full.{md,json}.
	go run ./bench/cmd/bench

.PHONY: bench-quick
bench-quick: ## Short benchmark (1 KiB, 1 and 16 callers, 3 rounds; about 2 min); writes bench/results/quick.{md,json} and charts.
	go run ./bench/cmd/bench -quick

.PHONY: bench-scale
bench-scale: build ## How cost grows, separate processes (about 6 min): 10-1,000 tunnel agents on one gateway and their reconnect storm, 10-1,000 instances in etcd with a real caller, 100-10,000 idle connections per transport; writes bench/results/scale.{md,json,svg} (SCALE_FLAGS=-quick: about 2 min, scale-quick.*).
	go run ./bench/cmd/scale -bin $(BIN) $(SCALE_FLAGS)

.PHONY: gen
gen: ## Regenerate kitex_gen/ from idl/ with the pinned Kitex generator.
	go tool kitex -module $(MODULE) idl/echo.thrift

.PHONY: fmt
fmt: ## Format the Go code.
	gofmt -w $$(git ls-files '*.go' | grep -v '^kitex_gen/')

.PHONY: clean
clean: ## Remove built binaries.
	rm -rf $(BIN)
