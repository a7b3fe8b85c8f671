# Retouch: a small image that runs as a non-root user with the database on a volume.
FROM python:3.11-slim AS build
RUN pip install --no-cache-dir "uv>=0.5,<1"
WORKDIR /app
COPY pyproject.toml uv.lock ./
RUN uv sync --frozen --no-dev --no-install-project
COPY bot ./bot
COPY cogs ./cogs
COPY storage ./storage

FROM python:3.11-slim
RUN useradd --create-home --uid 10001 retouch && mkdir -p /data && chown retouch /data
WORKDIR /app
COPY --from=build /app /app
ENV PATH="/app/.venv/bin:$PATH" \
    PYTHONUNBUFFERED=1 \
    RETOUCH_CONFIG=/data/config.toml \
    RETOUCH_STORAGE__PATH=/data/retouch.db \
    RETOUCH_STORAGE__FILES_DIR=/data/files \
    RETOUCH_WEB__HOST=0.0.0.0 \
    RETOUCH_WEB__PORT=8080
USER retouch
VOLUME ["/data"]
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=4).status != 200)"]
STOPSIGNAL SIGTERM
CMD ["python", "-m", "bot", "run"]
