# API image: the FastAPI app, migrations, the admin CLI and celery beat. It never contains torch.
# Build from the repository root: docker build -f deploy/docker/api.Dockerfile .
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    ATELIER_DATA_DIR=/var/lib/atelier

WORKDIR /app
COPY . .
RUN pip install ".[api]"
# DESIGN.md: the API image never imports torch. Fail the build if a dependency pulled it in.
RUN python -c "import importlib.util,sys; sys.exit(importlib.util.find_spec('torch') is not None)"
# Entry points import without torch; beat runs from this image too.
RUN python -c "import services.api.app, services.api.edge, shared.cli, workers.celery_app"

RUN useradd --system --uid 10001 --user-group --create-home --home-dir /var/lib/atelier atelier
USER 10001

EXPOSE 8000
# EdgeProtocol: request head and body deadlines, a cap on idle connections per client (services/api/edge.py).
CMD ["uvicorn", "services.api.edge:create_app", "--factory", "--http", "services.api.edge:EdgeProtocol", "--host", "0.0.0.0", "--port", "8000"]
