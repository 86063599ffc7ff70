# syntax=docker/dockerfile:1
# Build stage: turn the source into wheels (ours and every dependency).
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY router ./router
COPY plugins ./plugins
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

# Runtime stage: wheels only, no compilers, no source tree, not root.
FROM python:3.11-slim
ARG BUILD_COMMIT=unknown
ENV COMMONS_ROUTER_BUILD_COMMIT=${BUILD_COMMIT} \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links=/wheels commons-router \
    && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin router
COPY config/examples/container.yaml /etc/commons-router/config.yaml
LABEL org.opencontainers.image.source="https://github.com/commons-router/commons-router" \
      org.opencontainers.image.revision="${BUILD_COMMIT}"
USER 10001:10001
EXPOSE 8080 9901
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:9901/healthz', timeout=2).status != 200)"]
ENTRYPOINT ["commons-router"]
CMD ["serve", "--config", "/etc/commons-router/config.yaml"]
