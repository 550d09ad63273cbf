# syntax=docker/dockerfile:1
# The images of triton-vllm-operator, one target each:
#
#   docker build --target operator -t ghcr.io/triton-vllm-operator/operator:0.1.0 .
#   docker build --target serving  -t ghcr.io/triton-vllm-operator/serving:0.1.0 .
#
# operator: the kopf operator on python:3.11-slim, as a non-root numeric user (the chart runs it
#           with a read-only root filesystem).
# serving:  NVIDIA's Triton image with the vLLM release of versions.env (VLLM_VERSION: the release
#           whose engine arguments the operator validates and that the CPU tests run), plus the
#           bundled backend in /opt/tritonserver/backends/tritonvllm/ (the name config.pbtxt's
#           `backend:` gives, the operator's TRITON_VLLM_BACKEND default). The build fails if
#           the image's vLLM is another release. tests/unit/test_dockerfile.py checks all three.

# Base images, pinned (written out, not ARGs, so that every scanner sees the tag).
FROM python:3.11.14-slim-bookworm AS python-base

# ---------------------------------------------------------------------------------------------
FROM python-base AS operator-build

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml requirements-dev.txt ./
COPY operator/ operator/
# The package and its runtime dependencies, pinned to the versions the tests ran with:
# requirements-dev.txt serves as constraints (extras stripped), so no dev tool is installed.
RUN python -m venv /opt/venv \
    && sed 's/\[[^]]*\]//' requirements-dev.txt > /tmp/constraints.txt \
    && /opt/venv/bin/pip install --no-cache-dir -c /tmp/constraints.txt . \
    && /opt/venv/bin/python -c "import triton_vllm_operator.operator_main"

# ---------------------------------------------------------------------------------------------
FROM python-base AS operator

LABEL org.opencontainers.image.title="triton-vllm-operator" \
      org.opencontainers.image.description="Kubernetes operator for LLMs on NVIDIA Triton with a bundled vLLM backend" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PATH=/opt/venv/bin:${PATH} \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
COPY --from=operator-build /opt/venv /opt/venv
# Numeric, so that the kubelet can verify runAsNonRoot without resolving names.
USER 65532:65532
# kopf's liveness endpoint (TRITON_VLLM_LIVENESS_ENDPOINT).
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=4)"]
ENTRYPOINT ["python", "-m", "triton_vllm_operator", "run"]

# ---------------------------------------------------------------------------------------------
FROM nvcr.io/nvidia/tritonserver:25.12-vllm-python-py3 AS serving

LABEL org.opencontainers.image.title="triton-vllm-operator serving" \
      org.opencontainers.image.description="NVIDIA Triton with vLLM and the bundled tritonvllm backend"
# The base image ships its own vLLM; replace it with the pinned release (and its torch), then
# refuse to build an image whose vLLM is anything else.
ARG VLLM_VERSION=0.32.0
RUN python3 -m pip install --no-cache-dir "vllm==${VLLM_VERSION}" \
    && python3 -c "import sys, vllm; v = vllm.__version__; sys.exit(0 if v == sys.argv[1] else f'vLLM {v} in the image, not {sys.argv[1]}')" "${VLLM_VERSION}"
# A python-based backend: Triton loads backends/<name>/model.py through backends/python.
COPY backend/tritonvllm/ /opt/tritonserver/backends/tritonvllm/
# The image's own unprivileged user (triton-server); the pods mount /cache and /models.
USER 1000:1000
EXPOSE 8000 8001 8002
HEALTHCHECK --interval=30s --timeout=5s --start-period=600s \
    CMD ["python3", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/v2/health/live', timeout=4)"]
