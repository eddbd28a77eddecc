# syntax=docker/dockerfile:1
# MOBY's container image. One image runs every command: `serve` (the default), `proxy`, `edge`,
# `simulate`, `token`, ... (ENTRYPOINT is `moby`, the command is the container's arguments).
#   docker build -t moby:0.1.0 .                          the backend image (this file's last stage)
#   docker build --target edge -t moby-edge:0.1.0 .       for edge gateways: `moby edge`
# How to run them (data volume, API tokens, health check): docs/DEPLOY.md.

# python:3.11.16-slim-bookworm, pinned by the digest of its multi-architecture index (amd64 and
# arm64 alike): the tag says what it is, the digest makes every rebuild start from the same bytes.
# Bump both together (`docker buildx imagetools inspect python:3.11-slim-bookworm`).
ARG PYTHON_IMAGE=python:3.11.16-slim-bookworm@sha256:528257d48c1da0dcecc2e725d1ae34498d60c965f1241e39cd6a85a8859bdf84

# ---- build: the locked dependencies and MOBY's own wheel, in a virtual environment ------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_ROOT_USER_ACTION=ignore
WORKDIR /src
# The lock (`make lock`) pins every package with its hashes; only wheels are taken, so nothing is
# compiled here and a missing wheel for this platform fails the build instead of building it.
COPY requirements/ requirements/
RUN python -m venv /opt/build \
    && /opt/build/bin/pip install --no-cache-dir --require-hashes --only-binary=:all: -r requirements/build.txt \
    && python -m venv /opt/moby \
    && /opt/moby/bin/pip install --no-cache-dir --require-hashes --only-binary=:all: --no-deps -r requirements/moby.txt
COPY pyproject.toml README.md ./
COPY src/ src/
# MOBY itself, built with the locked setuptools; `pip check` fails the build if the lock misses
# anything the package needs.
RUN /opt/build/bin/pip wheel --no-cache-dir --no-build-isolation --no-deps --wheel-dir /wheels . \
    && /opt/moby/bin/pip install --no-cache-dir --no-deps /wheels/moby-*.whl \
    && /opt/moby/bin/pip check

# ---- build-edge: the agent's lighter environment (base dependencies and the [edge] extra) -------
# No FastAPI, uvicorn, Grafana SDK or cryptography: what a gateway runs is `moby edge` (Modbus,
# serial, command and waveform drivers; OPC UA needs the [opcua] extra, so the full image).
FROM ${PYTHON_IMAGE} AS build-edge
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_ROOT_USER_ACTION=ignore
COPY requirements/edge.txt /tmp/edge.txt
COPY --from=build /wheels /wheels
RUN python -m venv /opt/moby \
    && /opt/moby/bin/pip install --no-cache-dir --require-hashes --only-binary=:all: --no-deps -r /tmp/edge.txt \
    && /opt/moby/bin/pip install --no-cache-dir --no-deps /wheels/moby-*.whl \
    && /opt/moby/bin/pip check

# ---- base: what every image shares --------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS base
# A fixed, non-root uid/gid: files mounted into the container (API tokens, certificates) are made
# readable for 10001, and a named volume mounted on /var/lib/moby starts out owned by it.
RUN groupadd --system --gid 10001 moby \
    && useradd --system --uid 10001 --gid moby --home-dir /var/lib/moby --no-create-home \
        --shell /usr/sbin/nologin moby \
    && install -d -o moby -g moby -m 0750 /var/lib/moby
ENV PATH=/opt/moby/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    MOBY_DATA_DIR=/var/lib/moby
# The durable queue, dead letters, API tokens and an edge buffer live here: keep it on a volume.
VOLUME ["/var/lib/moby"]
WORKDIR /var/lib/moby
USER 10001:10001
ENTRYPOINT ["moby"]

# ---- edge: for gateways -------------------------------------------------------------------------
# `moby edge` with the agent's TOML file (and its certificates) mounted at /etc/moby.
FROM base AS edge
COPY --from=build-edge /opt/moby /opt/moby
CMD ["edge", "--config", "/etc/moby/agent.toml"]

# ---- server: the default image (`moby serve`, also `proxy`, `simulate`, ...) -------------------
FROM base AS server
COPY --from=build /opt/moby /opt/moby
COPY deploy/image/healthcheck.py /opt/moby/healthcheck.py
# A container is reached through its network interface, so the API and the proxy listen on every
# interface; beyond loopback MOBY requires API tokens (MOBY_API_AUTH=auto), which live in the
# volume (or MOBY_API_TOKENS_FILE): `docker run ... moby:0.1.0 token create --role viewer`.
ENV MOBY_API_HOST=0.0.0.0 \
    MOBY_PROXY_HOST=0.0.0.0
EXPOSE 8000
# Liveness of `serve` (/healthz) or `proxy`; other commands have nothing to ask. The venv's Python
# with urllib, since the slim image has no curl.
HEALTHCHECK --interval=30s --timeout=10s --start-period=30s --retries=3 \
    CMD ["/opt/moby/bin/python", "/opt/moby/healthcheck.py"]
CMD ["serve"]
