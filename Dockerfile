# The service image: Debian trixie-slim with Debian's python3 (3.13) and libjemalloc2, the locked
# dependencies in a venv, run as a non-root user. Needs BuildKit (default since Docker 23, and what
# Railway builds with). Build and run:
#   docker build -t lean-memory-service .
#   docker run --rm --memory=500m --memory-swap=500m -p 8000:8000 lean-memory-service
# Behind a TLS-intercepting proxy, hand pip the CA bundle (used in the build stage only, never
# stored in a layer):
#   docker build --secret id=ca,src=/etc/ssl/certs/ca-certificates.crt -t lean-memory-service .

# Shared by both stages, so the venv's interpreter is the very python3 the runtime runs.
FROM debian:trixie-slim AS base
ENV LANG=C.UTF-8 \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
# Apt versions are not pinned (DL3008): trixie is a stable suite that only takes security and
# point-release fixes, and the archive drops a version once it is superseded, so exact pins
# would break every build after the next security update. The suite is the pin.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 libjemalloc2 \
 && rm -rf /var/lib/apt/lists/*

FROM base AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3-venv \
 && rm -rf /var/lib/apt/lists/* \
 && python3 -m venv /opt/venv
COPY requirements.lock /tmp/requirements.lock
# The optional `ca` secret is a CA bundle for pip where TLS is re-signed by the network; without
# it pip uses its own. Wheels only: the runtime stage has no compiler.
RUN --mount=type=secret,id=ca \
    if [ -s /run/secrets/ca ]; then export PIP_CERT=/run/secrets/ca; fi \
 && /opt/venv/bin/pip install --require-hashes --only-binary=:all: -r /tmp/requirements.lock \
 && /opt/venv/bin/pip uninstall -y pip

FROM base AS runtime
RUN groupadd --system --gid 10001 app \
 && useradd --system --uid 10001 --gid app --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin app \
 && mkdir /data \
 && chown app:app /data
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
# Code stays root-owned: the service can read it, not rewrite it. Compiled once here, because
# the process may not write bytecode at runtime.
COPY profiles ./profiles
COPY app ./app
RUN /opt/venv/bin/python -m compileall -q app
# HOST=:: takes IPv6 and, on Linux (net.ipv6.bindv6only=0), IPv4 on the same socket: Railway's
# public edge arrives over IPv4, its private network is IPv6-only in environments created
# before 2025-10-16 (docs, private networking).
ENV PATH=/opt/venv/bin:$PATH \
    VIRTUAL_ENV=/opt/venv \
    HOST=:: \
    PORT=8000 \
    DATABASE_PATH=/data/service.db
USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('PORT', '8000'), timeout=4)"]
# The launcher applies MEMORY_PROFILE (LD_PRELOAD must be set before the interpreter starts) and
# execs uvicorn on $PORT in its place, so SIGTERM from `docker stop` or Railway reaches uvicorn.
CMD ["python", "-m", "app.launch"]
