# Image for docker-compose.yml: jobtrack with the Redis, Flower, web and Prometheus extras,
# the example celeryconfig.py and flowerconfig.py, run as an unprivileged user.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY jobtrack ./jobtrack
RUN pip install --no-cache-dir ".[redis,flower,web,prometheus]" \
    && useradd --create-home --uid 10001 jobtrack
COPY celeryconfig.py flowerconfig.py ./
ENV PYTHONUNBUFFERED=1 JOBTRACK_SPOOL_DIR=/home/jobtrack/spool
USER jobtrack
