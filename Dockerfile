# syntax=docker/dockerfile:1
# Needs BuildKit (the default builder of Docker 23+, or DOCKER_BUILDKIT=1), from a git
# checkout: `docker build -t commons-router .`. Every Python package comes from
# requirements/runtime.txt with its hash checked; base images are pinned by digest
# (refresh: `docker buildx imagetools inspect python:3.11-slim-bookworm`).
ARG PYTHON_IMAGE=python:3.11-slim-bookworm@sha256:a36c24f9cbdf4fd0f52d67f0823eeac19c2028c637cecc392d97f980d4fec56b

# Build stage: our wheel (recording the checkout's commit) and the locked dependency wheels.
FROM ${PYTHON_IMAGE} AS build
RUN apt-get update -qq \
    && apt-get install -y -qq --no-install-recommends git >/dev/null \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY requirements ./requirements
RUN pip download --no-cache-dir --require-hashes --no-deps --only-binary=:all: \
        --dest /wheels -r requirements/runtime.txt \
    && pip install --no-cache-dir --no-index --find-links=/wheels --require-hashes --no-deps \
        -r requirements/runtime.txt
COPY pyproject.toml setup.py README.md ./
COPY router ./router
COPY plugins ./plugins
# The checkout's .git is mounted read-only for the build hook (setup.py): the wheel records
# the commit and whether router/, plugins/ or the build files differ from it.
RUN --mount=type=bind,source=.git,target=/src/.git \
    pip wheel --no-cache-dir --no-deps --no-build-isolation --wheel-dir /wheels .

# Runtime stage: wheels only, no compilers, no source tree, not root.
FROM ${PYTHON_IMAGE}
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
COPY requirements/runtime.txt /tmp/runtime.txt
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links=/wheels --require-hashes --no-deps \
        -r /tmp/runtime.txt \
    && pip install --no-cache-dir --no-index --no-deps /wheels/commons_router-*.whl \
    && rm /tmp/runtime.txt \
    && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin router
COPY config/examples/container.yaml /etc/commons-router/config.yaml
LABEL org.opencontainers.image.source="https://github.com/commons-router/commons-router"
USER 10001:10001
EXPOSE 8080 9901
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:9901/healthz', timeout=2).status != 200)"]
ENTRYPOINT ["commons-router"]
CMD ["serve", "--config", "/etc/commons-router/config.yaml"]
