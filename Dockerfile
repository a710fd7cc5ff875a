# syntax=docker/dockerfile:1
#
# fedcast: one image for the key service, the aggregator and the edge client
# (`fedcast keyserver|aggregator|edge`), for linux/amd64 and linux/arm64:
#
#   docker buildx build --platform linux/amd64,linux/arm64 -t <registry>/fedcast:<tag> --push .
#
# Multi-arch without emulation pain: every dependency (gmpy2, numpy, cryptography, pynacl,
# msgpack, aio-pika's yarl/multidict/propcache, cffi) publishes manylinux wheels for
# x86_64 and aarch64 on CPython 3.11, and the build refuses source distributions
# (--only-binary), so no compiler is needed on either platform and a missing wheel
# fails the build instead of silently compiling under QEMU for an hour.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --- build: a virtualenv with fedcast and its dependencies ---------------------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
# Only what the wheel is built from (see .dockerignore): source edits elsewhere do
# not invalidate this layer.
COPY pyproject.toml README.md ./
COPY fedcast ./fedcast
COPY shared ./shared
COPY services ./services
RUN python -m venv /opt/fedcast \
 && /opt/fedcast/bin/pip wheel --no-deps --wheel-dir /tmp/wheels . \
 && /opt/fedcast/bin/pip install --only-binary=:all: /tmp/wheels/fedcast-*.whl \
 && /opt/fedcast/bin/pip uninstall --yes pip setuptools \
 && /opt/fedcast/bin/python -m compileall -q /opt/fedcast/lib

# --- runtime: the interpreter, the virtualenv, nothing else --------------------------
FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="fedcast" \
      org.opencontainers.image.description="Privacy-preserving federated learning for Industrial IoT: key service, aggregator, edge client" \
      org.opencontainers.image.licenses="Apache-2.0"

# Fixed uid/gid 10001: the Kubernetes manifests (runAsUser/fsGroup) and compose
# (`user:`) rely on it. The state directories exist and belong to it so that a
# fresh Docker named volume mounted there inherits that ownership.
RUN groupadd --system --gid 10001 fedcast \
 && useradd --system --uid 10001 --gid 10001 --no-create-home \
      --home-dir /nonexistent --shell /usr/sbin/nologin fedcast \
 && install -d -o 10001 -g 10001 -m 0700 /var/lib/fedcast \
      /var/lib/fedcast/keyserver /var/lib/fedcast/aggregator \
      /var/lib/fedcast/edge /var/lib/fedcast/bootstrap

COPY --from=build /opt/fedcast /opt/fedcast

# Bytecode was compiled at build time; the root filesystem is read-only at run time.
ENV PATH=/opt/fedcast/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    FEDCAST_METRICS_PORT=9100

USER 10001:10001
WORKDIR /var/lib/fedcast
EXPOSE 9100

# For Docker/compose only (Kubernetes uses its own probes): healthy = /readyz answers
# 200, i.e. the service has started and is serving. No curl in the image: Python is.
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/readyz' % os.environ.get('FEDCAST_METRICS_PORT', '9100'), timeout=4)"]

ENTRYPOINT ["fedcast"]
CMD ["--help"]
