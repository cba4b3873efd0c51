# syntax=docker/dockerfile:1
#
# eventrouter node image: `eventrouter serve` as a non-root user.
#
# NOTE: Docker cannot run where this file was written, so it has never been
# built there; it is kept deliberately simple (no cache mounts, no distroless)
# so that reading it is enough to review it.
#
#   docker build -t eventrouter .
#   docker run -p 50051:50051 -p 9464:9464 eventrouter          # secure default
#   docker run ... -e EVENTROUTER_KEYS_FILE=/run/secrets/keys.json eventrouter
#
# Every setting is an EVENTROUTER_<FIELD> variable, a flag after the image
# name, or a TOML file (--config FILE); to see the effective configuration:
#   docker run --rm --entrypoint python eventrouter -m eventrouter.server.ops.config_cli

ARG PYTHON_VERSION=3.12

# --- build: the project wheel and the wheels of its server dependencies ------
FROM python:${PYTHON_VERSION}-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY client ./client
COPY server ./server
RUN pip wheel --no-cache-dir --wheel-dir /wheels '.[server]'

# --- runtime: slim, no compiler, no sources, non-root --------------------------
FROM python:${PYTHON_VERSION}-slim
RUN useradd --system --uid 10001 --user-group \
        --home-dir /var/lib/eventrouter --create-home eventrouter
COPY --from=build /wheels /tmp/wheels
RUN pip install --no-cache-dir --no-index --find-links=/tmp/wheels 'eventrouter[server]' \
    && rm -rf /tmp/wheels
USER eventrouter
WORKDIR /var/lib/eventrouter
# Listen on all interfaces inside the container; JSON logs for collectors.
# The generated signing secret (when no keys file is given) lands under
# XDG_STATE_HOME: mount a volume there to keep tokens valid across restarts.
ENV EVENTROUTER_LISTEN=0.0.0.0:50051 \
    EVENTROUTER_METRICS_LISTEN=0.0.0.0:9464 \
    EVENTROUTER_LOG_FORMAT=json \
    XDG_STATE_HOME=/var/lib/eventrouter \
    PYTHONUNBUFFERED=1
# gRPC (EventRouterService, grpc.health.v1.Health, reflection) and HTTP
# (/metrics, status page at /, /status.json).
EXPOSE 50051 9464
# The gRPC health service, asked over plaintext on the default port: adapt the
# address (and use TLS credentials) if you change EVENTROUTER_LISTEN or serve TLS.
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import sys, grpc; from grpc_health.v1 import health_pb2 as h, health_pb2_grpc as g; r = g.HealthStub(grpc.insecure_channel('127.0.0.1:50051')).Check(h.HealthCheckRequest(service='eventrouter.v1.EventRouterService'), timeout=3); sys.exit(0 if r.status == h.HealthCheckResponse.SERVING else 1)"]
# SIGTERM (docker stop) drains gracefully within shutdown_grace_s (10 s default,
# docker stop's own default timeout is also 10 s: raise --time if you raise it).
STOPSIGNAL SIGTERM
ENTRYPOINT ["eventrouter", "serve"]
