FROM python:3.12-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY ledger ledger
COPY projections projections
COPY readmodels readmodels
# The `ledger` command is ops.cli:main; integrations/ is installed too, as pyproject's
# package list says (its LiteLLM dependency is the optional extra `litellm`, not installed
# here). tests/test_compose.py checks this list against pyproject and the command's imports.
COPY ops ops
COPY integrations integrations
COPY migrations migrations
RUN pip install --no-cache-dir .
ENV LEDGER_MIGRATIONS_DIR=/app/migrations
CMD ["ledger", "project"]
