# syntax=docker/dockerfile:1
#
# eventrouter node image: `eventrouter serve` as a non-root user, installed
# from the committed lock (requirements/server.txt, every package pinned and
# hashed) plus the project's own wheel.
#
#   make image        # buildah, --format docker (keeps the HEALTHCHECK); see docs/deploy.md
#   make image-test   # runs it: health over gRPC, token -> subscribe -> emit, drain on stop
#   docker build -t eventrouter .      # where a Docker engine runs: the same file
#
#   docker run -p 50051:50051 -p 9464:9464 eventrouter
#   docker run ... -v ./keys.json:/etc/eventrouter/keys.json:ro \
#       -e EVENTROUTER_KEYS_FILE=/etc/eventrouter/keys.json eventrouter
#
# Every setting is an EVENTROUTER_<FIELD> variable, a flag after the image
# name, or a TOML file (--config FILE); the effective configuration:
#   docker run --rm --entrypoint eventrouter eventrouter config
#
# BASE_IMAGE: any Debian 12 image with python3 >= 3.11 and the venv module.
# `make image` builds one from Debian's packages with debootstrap
# (scripts/build_base_image.sh) where no registry is reachable; with Docker
# Hub, python:3.11-slim-bookworm (the default here) is the same thing.
ARG BASE_IMAGE=docker.io/library/python:3.11-slim-bookworm

# --- build: a virtual environment from the lock, then the project wheel -------
FROM ${BASE_IMAGE} AS build
WORKDIR /src
COPY requirements/build.txt requirements/server.txt requirements/
# pip and setuptools, pinned and hashed (requirements/build.txt), in a venv of
# their own: the runtime venv gets no pip at all. Then the server's
# dependencies exactly as locked: hashes required, wheels only (no compiler
# anywhere), no resolver (--no-deps: the lock is complete).
# Behind a TLS-intercepting proxy, pass its CA bundle as a build secret (it
# stays out of the layers): --secret id=ca-bundle,src=/etc/ssl/certs/ca-certificates.crt
RUN --mount=type=secret,id=ca-bundle \
    if [ -f /run/secrets/ca-bundle ]; then export PIP_CERT=/run/secrets/ca-bundle; fi \
    && python3 -m venv /opt/build \
    && /opt/build/bin/pip install --quiet --no-cache-dir --require-hashes --no-deps \
        -r requirements/build.txt \
    && python3 -m venv --without-pip /opt/eventrouter \
    && /opt/build/bin/pip --python /opt/eventrouter/bin/python install --quiet --no-cache-dir \
        --require-hashes --no-deps --only-binary=:all: -r requirements/server.txt
# The project wheel last, so that a code change reuses the layers above.
COPY pyproject.toml README.md ./
COPY client ./client
COPY server ./server
RUN /opt/build/bin/pip wheel --quiet --no-cache-dir --no-deps --no-build-isolation \
        --wheel-dir /wheels . \
    && /opt/build/bin/pip --python /opt/eventrouter/bin/python install --quiet --no-cache-dir \
        --no-deps /wheels/eventrouter-*.whl \
    && /opt/eventrouter/bin/eventrouter --version

# --- runtime: the venv alone; no compiler, no pip, no sources; non-root --------
FROM ${BASE_IMAGE}
RUN useradd --uid 10001 --user-group \
        --home-dir /var/lib/eventrouter --create-home --shell /usr/sbin/nologin eventrouter
COPY --from=build /opt/eventrouter /opt/eventrouter
USER 10001:10001
WORKDIR /var/lib/eventrouter
# Listen on all interfaces inside the container; JSON logs for collectors.
# Without a keys file, a random HS256 secret is generated under
# XDG_STATE_HOME on first start (fine for a try-out: `docker exec ...
# eventrouter token --user alice`); mount a volume there to keep it, or give
# a JWKS with EVENTROUTER_KEYS_FILE (docs/deploy.md).
ENV PATH=/opt/eventrouter/bin:$PATH \
    EVENTROUTER_LISTEN=0.0.0.0:50051 \
    EVENTROUTER_METRICS_LISTEN=0.0.0.0:9464 \
    EVENTROUTER_LOG_FORMAT=json \
    XDG_STATE_HOME=/var/lib/eventrouter \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
# gRPC (EventRouterService, grpc.health.v1.Health, reflection) and HTTP
# (/metrics, status page at /, /status.json). The web listener for browsers
# (Connect, gRPC-Web) is off unless EVENTROUTER_WEB_LISTEN is set, e.g. to
# 0.0.0.0:8080 as deploy/kubernetes does.
EXPOSE 50051 9464
# The standard gRPC health service, asked over plaintext on the default port
# by the image's own CLI (exit 0 when SERVING). With TLS, add --tls-ca; with
# another EVENTROUTER_LISTEN port, set EVENTROUTER_TARGET. Kubernetes uses its
# own gRPC probes instead (deploy/kubernetes). Kept only in docker-format
# images: OCI image configs have no healthcheck field.
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=3 \
    CMD ["eventrouter", "health", "--service", "eventrouter.v1.EventRouterService", "--timeout", "3"]
# SIGTERM drains: the node turns NOT_SERVING, refuses new streams, ends open
# ones with UNAVAILABLE (clients reconnect elsewhere and resume), lets
# in-flight emits finish, and exits within shutdown_grace_s (10 s by default;
# docker stop's default wait is also 10 s: pass --time if you raise it).
STOPSIGNAL SIGTERM
ENTRYPOINT ["eventrouter", "serve"]
