# kaizen image: one image for every role (`kaizen worker`, `kaizen connect`, `kaizen mcp`), see docker-compose.yml.
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    KAIZEN_DATA_DIR=/var/lib/kaizen

WORKDIR /app
# Only what the distribution needs (no tests, venvs or local data in the image).
COPY pyproject.toml README.md ./
COPY kaizen ./kaizen
COPY streams ./streams
COPY agents ./agents
COPY connectors ./connectors
COPY mcp_server ./mcp_server
COPY benchmarks ./benchmarks
RUN pip install . \
 && useradd --system --uid 10001 --home-dir /var/lib/kaizen --create-home kaizen

USER kaizen
WORKDIR /var/lib/kaizen
EXPOSE 8004
ENTRYPOINT ["kaizen"]
CMD ["worker"]
