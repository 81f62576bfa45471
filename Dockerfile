# Image for docker-compose.yml: jobtrack with the Redis, Flower, web and Prometheus extras.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md celeryconfig.py flowerconfig.py ./
COPY jobtrack ./jobtrack
RUN pip install --no-cache-dir ".[redis,flower,web,prometheus]"
ENV PYTHONUNBUFFERED=1
