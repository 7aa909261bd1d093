# Image for the worker and the sink in compose.yaml.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY ledger ledger
COPY producers producers
COPY streams streams
COPY reports reports
RUN pip install --no-cache-dir .
ENV MIGRATION_LEDGER_DUCKDB=/data/ledger
ENTRYPOINT []
