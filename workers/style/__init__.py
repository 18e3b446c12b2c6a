"""Pure-PyTorch Gatys style-transfer engine: images, VGG19 encoder, losses, the loop. No Celery, SQL or S3."""

from workers.style.transfer import DivergenceError, transfer
from workers.style.vgg import WeightsUnavailableError, build_vgg19

__all__ = ["DivergenceError", "WeightsUnavailableError", "build_vgg19", "transfer"]
