# triton-vllm-operator: every entry point. `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help

include versions.env
export

CACHE_DIR ?= $(HOME)/.cache/triton-vllm-operator
WORK_DIR ?= $(CURDIR)/.work
VENV := .venv
PY := $(VENV)/bin/python
DEV_STAMP := $(VENV)/.installed-$(shell cat requirements-dev.txt pyproject.toml | sha256sum | cut -c1-12)
export CACHE_DIR WORK_DIR

##@ Setup

.PHONY: help
help: ## Show this help
	@awk 'BEGIN {FS = ":.*##"} /^##@/ {printf "\n%s\n", substr($$0, 5)} /^[a-zA-Z_-]+:.*##/ {printf "  %-18s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: install
install: $(DEV_STAMP) ## Install the operator and its pinned dev tools into .venv

$(DEV_STAMP):
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q -r requirements-dev.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $@

.PHONY: serving-env
serving-env: ## Install tritonserver + vLLM (CPU) into a cached environment
	hack/serving-env.sh

##@ Development

.PHONY: crds
crds: install ## Regenerate crds/ from the pydantic models
	$(PY) -m triton_vllm_operator crd > crds/tritonvllm.io_tritonvllmmodels.yaml
	cp crds/tritonvllm.io_tritonvllmmodels.yaml charts/triton-vllm-operator/files/crds/

.PHONY: engine-args
engine-args: install serving-env ## Regenerate the AsyncEngineArgs snapshot from the pinned vLLM
	"$$(hack/serving-env.sh --print)/venv/bin/python" hack/snapshot_engine_args.py \
		> operator/triton_vllm_operator/data/engine_args.json

.PHONY: lint
lint: install ## ruff, mypy and import-linter (the pure layers never import the runtime)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	PYTHONPATH=operator $(VENV)/bin/lint-imports

.PHONY: fmt
fmt: install ## Format the code
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

.PHONY: test-unit
test-unit: install ## Unit tests only (no cluster, no serving env)
	$(VENV)/bin/pytest -m "not cluster and not serving" -ra

.PHONY: test
test: install serving-env cluster-build autoscaling-tools gateway-tools chart-tools lint ## Every test: unit, real control plane (API server restart included), real tritonserver + vLLM, demo
	RELIABILITY_RESTART_APISERVER=1 $(VENV)/bin/pytest -ra

.PHONY: run
run: install ## Run the operator against the current kubeconfig
	$(PY) -m triton_vllm_operator run

##@ Packaging

CHART := charts/triton-vllm-operator

.PHONY: chart-tools
chart-tools: ## Install the pinned chart/Dockerfile linters (kubeconform, kube-score, hadolint, checkov)
	hack/chart-tools.sh

.PHONY: chart-lint
chart-lint: install cluster-build chart-tools ## helm lint, hadolint, kubeconform, checkov, kube-score, install/RBAC tests
	"$$(hack/cluster.sh bin-dir)/helm" lint --strict $(CHART)
	"$$(hack/chart-tools.sh bin-dir)/hadolint" Dockerfile
	$(VENV)/bin/pytest -ra tests/unit/test_chart_files.py tests/unit/test_dockerfile.py \
		tests/integration/test_chart.py tests/integration/test_examples.py

##@ Benchmarks

.PHONY: bench-operator
bench-operator: install cluster-build ## Operator scale: N=10,100,1000 models on kwok nodes -> docs/benchmarks/operator.md
	$(PY) -m bench.operator_scale $(BENCH_ARGS)

.PHONY: bench-autoscaling
bench-autoscaling: install serving-env cluster-build autoscaling-tools ## Autoscaling timings with the defaults (real engine, Prometheus, KEDA) -> docs/benchmarks/autoscaling.md
	$(PY) -m bench.autoscaling $(BENCH_ARGS)

.PHONY: bench-backend
bench-backend: install serving-env ## Triton + tritonvllm vs the raw vLLM engine over a concurrency sweep -> docs/benchmarks/backend.md
	$(PY) -m bench.backend_overhead $(BENCH_ARGS)

.PHONY: bench-openai
bench-openai: install serving-env ## The OpenAI port vs `vllm serve`, same engine, with `vllm bench serve` (BENCH_ARGS='--concurrency 1,4,16') -> docs/benchmarks/openai.md
	$(PY) -m bench.openai_vs_vllm_serve $(BENCH_ARGS)

.PHONY: bench-dashboard
bench-dashboard: install serving-env cluster-build autoscaling-tools ## The Grafana dashboard's queries on a real tritonserver and operator, plotted -> docs/monitoring/dashboard.png
	$(PY) -m bench.dashboard $(BENCH_ARGS)

.PHONY: bench-gpu
bench-gpu: ## On NVIDIA GPUs: Triton + tritonvllm vs raw vLLM, 8B-shape Llama (BENCH_ARGS='--tp 2'; GPU_WHEELHOUSE=DIR offline) -> docs/benchmarks/gpu-tp<N>.md; BENCH_ARGS='--paths openai': our OpenAI port vs vllm serve -> gpu-openai.md
	env="$$(hack/gpu-env.sh --print)" && PYTHONPATH=operator:. "$$env/venv/bin/python" -m bench.gpu_bench $(BENCH_ARGS)

.PHONY: gpu-wheelhouse
gpu-wheelhouse: ## Download the GPU stack's wheels for a GPU machine without a package index (GPU_WHEELHOUSE=DIR, GPU_HAVE=its pip freeze)
	hack/gpu-env.sh --wheelhouse "$(or $(GPU_WHEELHOUSE),$(WORK_DIR)/gpu-wheelhouse)" $(GPU_HAVE)

##@ Reliability

.PHONY: chaos
chaos: install cluster-build ## Long reliability run: 200 models under SIGKILL, 500 hostile specs, apiserver restart, partitions, 10,000 pods (CHAOS_SEED=N repeats a plan)
	RELIABILITY_LONG=1 RELIABILITY_RESTART_APISERVER=1 $(VENV)/bin/pytest -ra -s tests/reliability

##@ Demo

.PHONY: demo
demo: install serving-env cluster-build ## The whole product on this machine: cluster, chart, operator, a real generate request
	hack/demo.sh

.PHONY: demo-down
demo-down: ## Stop everything the demo started
	hack/demo.sh down

##@ Local control plane

.PHONY: cluster-build
cluster-build: ## Build etcd, kube-*, kubectl, kwok and helm from the Go module proxy (cached)
	hack/cluster.sh build

.PHONY: autoscaling-tools
autoscaling-tools: ## Build KEDA (operator, metrics apiserver) and Prometheus from the Go module proxy (cached)
	hack/autoscaling-tools.sh

.PHONY: gateway-tools
gateway-tools: ## Build the Gateway API Inference Extension's endpoint picker (lwepp) and fetch its InferencePool CRD from the Go module proxy (cached)
	hack/gateway-tools.sh

.PHONY: cluster-up
cluster-up: cluster-build ## Start the local control plane with simulated GPU nodes
	hack/cluster.sh up

.PHONY: cluster-status
cluster-status: ## Show the local control plane's processes and memory
	hack/cluster.sh status

.PHONY: cluster-down
cluster-down: ## Stop the local control plane
	hack/cluster.sh down
