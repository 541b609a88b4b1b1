FROM python:3.12-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY ledger ledger
COPY projections projections
COPY readmodels readmodels
COPY migrations migrations
RUN pip install --no-cache-dir .
ENV LEDGER_MIGRATIONS_DIR=/app/migrations
CMD ["ledger", "project"]
