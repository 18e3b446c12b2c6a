"""Pure-PyTorch Gatys style-transfer engine: images, VGG16/VGG19 encoder, losses, the loop. No Celery, SQL or S3."""

from workers.style.transfer import TransferResult, run_transfer, transfer
from workers.style.vgg import WeightsUnavailableError, build_vgg, build_vgg19
from workers.training import DivergenceError

__all__ = [
    "DivergenceError",
    "TransferResult",
    "WeightsUnavailableError",
    "build_vgg",
    "build_vgg19",
    "run_transfer",
    "transfer",
]
