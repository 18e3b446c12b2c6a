# Worker image: Celery workers for the gpu and cpu queues.
# PyPI's torch wheels for x86_64 Linux are CUDA builds that bundle the CUDA runtime, so a slim
# Python base is enough; the host needs only the NVIDIA driver and container toolkit.
# Build from the repository root: docker build -f deploy/docker/worker.Dockerfile .
FROM python:3.11-slim

# Keep equal to the pins of the `worker` extra in pyproject.toml (tests/unit/test_deploy_files.py checks).
ARG TORCH_VERSION=2.14.1
ARG TORCHVISION_VERSION=0.29.1

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    ATELIER_DATA_DIR=/var/lib/atelier \
    TORCH_HOME=/opt/atelier/torch \
    ATELIER_TORCH_HOME=/opt/atelier/torch/hub

# tini -g forwards SIGTERM to the whole process group: Celery's main process alone would
# only wait for the running task, while the pool child is the one that must checkpoint.
RUN apt-get update \
    && apt-get install -y --no-install-recommends tini \
    && rm -rf /var/lib/apt/lists/*

# torch in its own layer, before the sources: several GB that a code change must not re-fetch.
RUN pip install "torch==${TORCH_VERSION}" "torchvision==${TORCHVISION_VERSION}"

# Bake the VGG19 ImageNet weights used by style transfer, so workers never download them.
# torch caches them in its hub dir, $TORCH_HOME/hub/checkpoints; ATELIER_TORCH_HOME names
# that hub dir (workers/style/vgg.py reads <ATELIER_TORCH_HOME>/checkpoints).
RUN python -c "import torchvision; torchvision.models.VGG19_Weights.IMAGENET1K_V1.get_state_dict(progress=False)" \
    && ls "$ATELIER_TORCH_HOME"/checkpoints/vgg19-*.pth

WORKDIR /app
COPY . .
RUN pip install ".[worker]"
RUN python -c "import workers.celery_app, workers.engines"

RUN useradd --system --uid 10001 --user-group --create-home --home-dir /var/lib/atelier atelier
USER 10001

ENTRYPOINT ["/usr/bin/tini", "-g", "--"]
CMD ["celery", "-A", "workers.celery_app", "worker", "-Q", "gpu", "--concurrency", "1", "--loglevel", "INFO"]
