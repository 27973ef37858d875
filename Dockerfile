# The gateway as a small image. Build and run:
#   docker build -t missive-gateway .
#   docker run -p 8080:8080 -e MISSIVE_SECRET=... \
#     -v "$PWD/gateway-config:/config:ro" -v gateway-data:/data missive-gateway
# Mount the config's folder (holding config.yaml and its template files), not the file alone: an editor
# that saves by renaming would leave a file mount on the old copy, and hot reload would never see the edit.
# Without a config mounted it serves the bundled config.example.yaml, and refuses to while MISSIVE_SECRET is
# unset (the example's placeholder secret). See README "Running in Docker".

ARG PYTHON_IMAGE=python:3.12-slim-bookworm

# --- build: a virtualenv holding the gateway and its dependencies (all from wheels, no compiler needed) ---
FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
# --without-pip: the base image's pip installs into the venv, so pip itself stays out of the final image.
RUN python -m venv --without-pip /opt/gateway
COPY pyproject.toml README.md /src/
COPY gateway /src/gateway
RUN pip --python /opt/gateway/bin/python install "/src[speed]" \
 && find /opt/gateway -name __pycache__ -prune -exec rm -rf {} +

# --- run: the slim base, the virtualenv, the example config; nothing else ---
FROM ${PYTHON_IMAGE}
# The data directory is the gateway user's alone (0700): the database holds payloads and rendered
# requests, whose headers may carry destination tokens.
RUN groupadd --system --gid 10001 gateway \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin gateway \
 && install -d -o gateway -g gateway -m 0700 /data
COPY --from=build /opt/gateway /opt/gateway
COPY config.example.yaml /config/config.yaml

# GATEWAY_DB and GATEWAY_PORT are read by config.example.yaml (${GATEWAY_DB:-...}, ${GATEWAY_PORT:-8080});
# GATEWAY_PORT is the port the gateway listens on, and the health check probes it: keep it equal to
# server.port in a config of your own. GATEWAY_CONFIG is the config every command reads (`-c` overrides it).
ENV PATH=/opt/gateway/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    GATEWAY_CONFIG=/config/config.yaml \
    GATEWAY_DB=/data/gateway.db \
    GATEWAY_PORT=8080

USER 10001:10001
WORKDIR /config
VOLUME ["/data"]
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('GATEWAY_PORT', '8080'), timeout=4)"]

# Exec form: the gateway is PID 1 and gets SIGTERM itself; it stops taking requests, lets work in
# flight finish within server.shutdown_grace, and exits 0. SIGHUP reloads (`docker kill -s HUP NAME`).
# Other commands: `docker run IMAGE check`, `docker exec NAME gateway deliveries --status dead`.
ENTRYPOINT ["gateway"]
CMD ["serve"]
