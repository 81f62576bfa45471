# The worker image of the pytest-celery smoke suite: Celery and pytest-celery (whose
# worker vendor runs `celery -A app worker` in /app, from files it puts in a volume) and
# jobtrack installed from this checkout. Built by scripts/test-containers:
#   docker build -t jobtrack-smoke-worker:local -f - . < tests/smoke/worker.Dockerfile
FROM python:3.11-slim
WORKDIR /src
COPY pyproject.toml README.md ./
COPY jobtrack ./jobtrack
RUN pip install --no-cache-dir ".[redis]" "pytest-celery[redis]>=1.1" \
    && useradd --create-home --uid 10001 test_user
ENV PYTHONUNBUFFERED=1 JOBTRACK_SPOOL_DIR=/home/test_user/spool
WORKDIR /app
USER test_user
