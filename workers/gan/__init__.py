"""Pure-PyTorch DCGAN engine: nets, data, the training loop and sampling. No Celery, SQL or S3."""

from workers.gan.loop import DivergenceError, train
from workers.gan.sample import sample

__all__ = ["DivergenceError", "sample", "train"]
