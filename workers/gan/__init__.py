"""Pure-PyTorch DCGAN engine: nets, data, the training loop and sampling. No Celery, SQL or S3."""

from workers.gan.loop import train
from workers.gan.sample import sample
from workers.training import DivergenceError

__all__ = ["DivergenceError", "sample", "train"]
