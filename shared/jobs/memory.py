"""How much device memory a job needs, estimated without torch, so the API can refuse a job
that won't fit on the workers and a worker can refuse it before it starts allocating.

style.transfer: the estimate is for the largest scale, on a square image of the longer side (the worst case
for that side), in fp32:
- activations kept for the backward pass: the normalised input and every module's output up
  to the deepest layer used (conv and ReLU outputs, pooled maps and, for max pooling, their
  int64 indices), times ACTIVATION_FACTOR for the gradients and workspace of the backward pass;
- the no-grad forward of the (style_scale times larger) style images, one module at a time;
- the optimiser: Adam's two moments, or L-BFGS's history of 2 x 100 image-sized vectors;
- the image, its gradient, the targets (content features, style Grams) and the weights.
tests/unit/jobs/test_style_memory.py checks it against the peak memory of real runs on CPU.

gan.train and gan.sample: see the section below.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Final

from shared.jobs.gan_train import GanTrainParams
from shared.jobs.style_train import StyleTrainParams
from shared.jobs.style_transfer import StyleTransferParams
from shared.jobs.vgg_layers import POOL, VGG_CONFIGS, layer_names

FLOAT_BYTES: Final = 4
INDEX_BYTES: Final = 8  # max pooling keeps int64 argmax indices for its backward
CHANNELS: Final = 3
KERNEL_AREA: Final = 9
LBFGS_HISTORY: Final = 100  # the engine's history_size: two image-sized vectors each
LBFGS_WORK_VECTORS: Final = 6  # direction, previous gradient, flat gradient, ...
ADAM_VECTORS: Final = 2  # exp_avg, exp_avg_sq
IMAGE_VECTORS: Final = 3  # the variable, its gradient, the displayed pixels
ACTIVATION_FACTOR: Final = 2.0  # backward: a gradient per saved activation at the peak, and workspace
FORWARD_ONLY_FACTOR: Final = 3.0  # a no-grad pass holds a module's input and output (+ workspace)
OVERHEAD_BYTES: Final = 256 * 1024 * 1024  # allocator slack, kernels' scratch, small tensors
GIB: Final = 1024**3


def _module_shapes(network: str, depth: int, size: int) -> list[tuple[str, int, int]]:
    """(kind, channels, side) of the output of each of the first ``depth`` feature modules."""
    shapes: list[tuple[str, int, int]] = []
    channels, side = CHANNELS, size
    for item in VGG_CONFIGS[network]:
        if item == POOL:
            side = max(1, side // 2)
            shapes.append(("pool", channels, side))
        else:
            channels = int(item)
            shapes += [("conv", channels, side), ("relu", channels, side)]
    return shapes[:depth]


def _weights_bytes(network: str, depth: int) -> int:
    total, channels = 0, CHANNELS
    for kind, out_channels, _side in _module_shapes(network, depth, 1):
        if kind == "conv":
            total += (channels * out_channels * KERNEL_AREA + out_channels) * FLOAT_BYTES
        channels = out_channels
    return total


def style_memory_bytes(params: StyleTransferParams) -> int:
    """Estimated peak device memory of ``params``'s largest scale, in bytes."""
    names = layer_names(params.network)
    used = params.content_layers + params.style_layers
    depth = max(names.index(layer) for layer in used) + 1
    size = params.size
    image = CHANNELS * size * size * FLOAT_BYTES

    shapes = _module_shapes(params.network, depth, size)
    saved = image  # the normalised input
    for kind, channels, side in shapes:
        saved += channels * side * side * FLOAT_BYTES
        if kind == "pool" and params.pooling == "max":
            saved += channels * side * side * INDEX_BYTES
    activations = ACTIVATION_FACTOR * saved

    style_shapes = _module_shapes(params.network, depth, params.largest_style_size())
    style_pass = FORWARD_ONLY_FACTOR * max(c * s * s for _k, c, s in style_shapes) * FLOAT_BYTES

    by_name = dict(zip(names, shapes, strict=False))
    content_targets = sum(by_name[layer][1] * by_name[layer][2] ** 2 for layer in params.content_layers)
    grams = len(params.styles) * sum(by_name[layer][1] ** 2 for layer in params.style_layers)
    targets = (content_targets + grams) * FLOAT_BYTES

    vectors = 2 * LBFGS_HISTORY + LBFGS_WORK_VECTORS if params.optimizer == "lbfgs" else ADAM_VECTORS
    optimiser = (vectors + IMAGE_VECTORS) * image

    loop = activations + optimiser + targets
    return int(max(loop, style_pass + targets) + _weights_bytes(params.network, depth) + OVERHEAD_BYTES)


# --- style.train (johnson) -------------------------------------------------------------------
# One step: the transformer network's activations over the batch (kept for the backward), the loss
# network's activations over its output (kept: the gradient flows through it to the network), the
# content batch's no-grad pass for the content targets, and the network's weights, gradients and
# Adam moments. The layer plan mirrors workers/style/johnson.py's TransformerNet.
TRANSFORMER_SAVED_PER_LAYER: Final = 3  # convolution, instance norm and ReLU outputs
TRANSFORMER_RESIDUAL_LAYERS: Final = 2  # two convolutions per residual block
TRANSFORMER_WEIGHT_COPIES: Final = 4  # weights, gradients, Adam's two moments
ADAIN_CHANNELS: Final = 512  # relu4_1's channels in VGG16 and VGG19: the decoder's input


def _transformer_layers(width: int, residual_blocks: int, side: int) -> list[tuple[int, int, int, int]]:
    """(in channels, out channels, kernel side, output side) of each convolution, input to output."""
    w = width
    layers = [(CHANNELS, w, 9, side), (w, 2 * w, 3, side // 2), (2 * w, 4 * w, 3, side // 4)]
    layers += [(4 * w, 4 * w, 3, side // 4)] * (TRANSFORMER_RESIDUAL_LAYERS * residual_blocks)
    return [*layers, (4 * w, 2 * w, 3, side // 2), (2 * w, w, 3, side), (w, CHANNELS, 9, side)]


def _decoder_layers(width: int, side: int) -> list[tuple[int, int, int, int]]:
    """AdaIN's decoder (workers/style/adain.py), from relu4_1's 512 channels at side / 8 back to RGB."""
    w, eighth, quarter, half = width, side // 8, side // 4, side // 2
    layers = [(ADAIN_CHANNELS, 4 * w, 3, eighth), *[(4 * w, 4 * w, 3, quarter)] * 3, (4 * w, 2 * w, 3, quarter)]
    return [*layers, (2 * w, 2 * w, 3, half), (2 * w, w, 3, half), (w, w, 3, side), (w, CHANNELS, 3, side)]


def _style_net_layers(params: StyleTrainParams, side: int) -> list[tuple[int, int, int, int]]:
    """The convolutions of the network a style.train job trains: Johnson's transformer or AdaIN's decoder."""
    if params.method == "adain":
        return _decoder_layers(params.width, side)
    return _transformer_layers(params.width, params.residual_blocks, side)


def _encoder_depth(params: StyleTrainParams) -> int:
    names = layer_names(params.network)
    return max(names.index(layer) for layer in params.content_layers + params.style_layers) + 1


def _transformer_floats(params: StyleTrainParams) -> tuple[int, int]:
    """(activation floats saved per picture, weight count) of the trained network at ``params.size``."""
    layers = _style_net_layers(params, params.size)
    saved = sum(TRANSFORMER_SAVED_PER_LAYER * out_c * out_side**2 for _in_c, out_c, _k, out_side in layers)
    weights = sum(in_c * out_c * k * k + 3 * out_c for in_c, out_c, k, _side in layers)
    return saved, weights


def style_model_params(params: StyleTrainParams) -> int:
    """Parameters of the model file a style.train job saves: Johnson's network, or AdaIN's decoder and encoder."""
    trained = _transformer_floats(params)[1]
    if params.method == "adain":  # the encoder's weights travel in the model file too
        trained += _weights_bytes(params.network, _encoder_depth(params)) // FLOAT_BYTES
    return trained


def style_train_memory_bytes(params: StyleTrainParams) -> int:
    """Estimated peak device memory of one style.train step, in bytes."""
    names = layer_names(params.network)
    depth = _encoder_depth(params)
    size, batch = params.size, params.batch_size
    shapes = _module_shapes(params.network, depth, size)
    encoder_saved = CHANNELS * size * size + sum(c * s * s for _k, c, s in shapes)
    encoder_saved += sum(c * s * s * INDEX_BYTES // FLOAT_BYTES for k, c, s in shapes if k == "pool")
    transformer_saved, transformer_weights = _transformer_floats(params)
    activations = ACTIVATION_FACTOR * batch * (encoder_saved + transformer_saved) * FLOAT_BYTES
    # the content batch's no-grad pass (AdaIN's style batch's comes after it, once the first is freed), or
    # Johnson's one-off pass over each style picture at style_size, whichever is wider
    style_shapes = _module_shapes(params.network, depth, params.style_side())
    widest_pass = max(batch * max(c * s * s for _k, c, s in shapes), max(c * s * s for _k, c, s in style_shapes))
    targets_pass = FORWARD_ONLY_FACTOR * widest_pass * FLOAT_BYTES
    by_name = dict(zip(names, shapes, strict=False))
    content_targets = batch * sum(by_name[layer][1] * by_name[layer][2] ** 2 for layer in params.content_layers)
    grams = len(params.styles) * sum(by_name[layer][1] ** 2 for layer in params.style_layers)
    state = TRANSFORMER_WEIGHT_COPIES * transformer_weights + content_targets + grams
    return int(
        activations + targets_pass + state * FLOAT_BYTES + _weights_bytes(params.network, depth) + OVERHEAD_BYTES
    )


APPLY_PICTURE_COPIES: Final = 6  # the decoded picture, its tensor, the padded input, the output, the blend, the PNG


def style_apply_memory_bytes(trained: StyleTrainParams, size: int, *, styles: int = 0) -> int:
    """Estimated peak device memory of applying the model ``trained`` describes to one ``size`` px picture
    (and, for AdaIN, ``styles`` style pictures of that size)."""
    layers = _style_net_layers(trained, size)
    widest = max(out_c * out_side**2 for _in_c, out_c, _k, out_side in layers)
    weights = style_model_params(trained)
    pictures = APPLY_PICTURE_COPIES * CHANNELS * size * size
    if trained.method == "adain":  # the encoder's passes over the picture and each style picture
        shapes = _module_shapes(trained.network, _encoder_depth(trained), size)
        widest = max(widest, max(c * s * s for _k, c, s in shapes))
        pictures += styles * (widest + CHANNELS * size * size)
    return int((FORWARD_ONLY_FACTOR * widest + weights + pictures) * FLOAT_BYTES + OVERHEAD_BYTES)


def describe_bytes(count: float) -> str:
    """``count`` bytes as GiB with one decimal (MiB below 1 GiB)."""
    return f"{count / GIB:.1f} GiB" if count >= GIB else f"{count / 1024**2:.0f} MiB"


# --- gan.train and gan.sample ------------------------------------------------------------
# A GAN job's peak is one training step: the weights, their gradients and Adam's two moments
# (plus the EMA generator's copy), and the activations autograd keeps. The D step keeps G's
# graph (its fakes feed the G step) beside D's graphs of the real and the fake batch, so the
# peak is G's activations plus two of D's (more with a gradient penalty, whose double backward
# keeps D's graph and its gradient's). Between steps, sampling passes (fixed-noise grids, EMA
# batch-norm recalibration, evaluation) and the checkpoint's serialised copies take their place.
# tests/unit/jobs/test_gan_memory.py checks the parameter counts against the real networks and the
# estimate against the peak memory of real runs on CPU.

GAN_KERNEL_AREA: Final = 16  # every DCGAN and multi-scale convolution is 4 x 4 ...
RGB_KERNEL_AREA: Final = 1  # ... but toRGB and fromRGB, which are 1 x 1
GAN_BASE_SIDE: Final = 4
MAX_WIDTH_MULT: Final = 8  # multi-scale widths stop doubling at 8 x ngf (workers/gan/multiscale.py)
MLP_G_MULTS: Final = (4, 8, 16)  # x ngf (workers/gan/nets.py)
MLP_D_MULTS: Final = (8, 4)  # x ndf
POINT_DIM: Final = 2
GRAD_COPIES: Final = 1
ADAM_MOMENTS: Final = 2
BF16_WEIGHT_BYTES: Final = 2  # autocast's bf16 copy of each weight (CUDA, precision auto or bf16)
D_GRAPHS: Final = 2  # D's graphs alive at the D step's backward: the real and the fake batch
GP_D_GRAPHS: Final = 2  # WGAN-GP: D on the interpolates, and the graph of its input gradient
R1_D_GRAPHS: Final = 1  # R1: the graph of D's input gradient at the real batch
AUGMENT_FLOATS_PER_PIXEL: Final = 8  # per DiffAugment policy and D input: new images and int64 index grids
GAN_ACTIVATION_FACTOR: Final = 2.0  # backward: a gradient per saved activation at the peak, and workspace
GAN_OVERHEAD_BYTES: Final = 256 * 1024 * 1024  # as OVERHEAD_BYTES: allocator slack, scratch, small tensors
CHECKPOINT_COPIES: Final = 3  # torch.save's growing buffer, its final bytes and the upload's copy
# A no-grad pass of G holds a layer's input, its output, batch norm's output and the transposed
# convolution's column buffer: 4.1 x the widest output measured (the EMA recalibration on CPU)
GAN_FORWARD_ONLY_FACTOR: Final = 5.0
FIXED_NOISE_COUNT: Final = 64  # as workers/gan/loop.py: the sample grids
FIXED_POINTS_COUNT: Final = 1000
BN_RECAL_SIZE: Final = 512  # the EMA generator's batch-norm recalibration batch
EVAL_CHUNK: Final = 250  # image evaluation: generated in chunks of this many
SAMPLE_CHUNK: Final = 256  # gan.sample: images per forward pass (workers/gan/sample.py)
SAMPLE_OUTPUT_COPIES: Final = 3  # gan.sample: the chunks, their concatenation, the .npy buffer (2 measured)
DEFAULT_CONDITIONAL_CLASSES: Final = 10  # the built-in labelled sets have 10 classes or fewer


@dataclass(frozen=True)
class NetSize:
    """A network's size: parameter count, elements kept for backward per sample, widest output per sample."""

    params: int
    saved: int
    widest: int
    largest_weight: int


class _NetCounter:
    """Adds up a network layer by layer, as workers/gan/nets.py and multiscale.py build it."""

    def __init__(self, input_elements: int) -> None:
        self.params = 0
        self.saved = input_elements
        self.widest = input_elements
        self.largest_weight = 0

    def layer(self, c_in: int, c_out: int, side: int, *, kernel: int, bias: bool, norm: bool, kept: int) -> None:
        """A convolution (or dense layer, side 1 and kernel 1), an optional norm; ``kept`` outputs saved."""
        weight = c_in * c_out * kernel
        self.params += weight + (c_out if bias else 0) + (2 * c_out if norm else 0)
        self.largest_weight = max(self.largest_weight, weight)
        self.saved += kept * c_out * side * side
        self.widest = max(self.widest, c_out * side * side)

    def tensor(self, elements: int) -> None:
        """Tensors a forward pass creates besides layer outputs (concatenations, lerps, upsampling)."""
        self.saved += elements
        self.widest = max(self.widest, elements)

    def size(self) -> NetSize:
        """What was counted."""
        return NetSize(self.params, self.saved, self.widest, self.largest_weight)


def _gan_stages(image_size: int) -> int:
    return (image_size // GAN_BASE_SIDE).bit_length() - 1


def _dcgan_generator(params: GanTrainParams, channels: int, classes: int) -> NetSize:
    net = _NetCounter(params.nz + classes)
    stages = _gan_stages(params.image_size)
    width, side = params.ngf * 2 ** (stages - 1), GAN_BASE_SIDE
    # conv transpose, batch norm (its input and the in-place ReLU's output are kept)
    net.layer(params.nz + classes, width, side, kernel=GAN_KERNEL_AREA, bias=False, norm=True, kept=2)
    while width > params.ngf:
        side *= 2
        net.layer(width, width // 2, side, kernel=GAN_KERNEL_AREA, bias=False, norm=True, kept=2)
        width //= 2
    # the last conv transpose and Tanh
    net.layer(width, channels, params.image_size, kernel=GAN_KERNEL_AREA, bias=False, norm=False, kept=2)
    return net.size()


def _dcgan_discriminator(params: GanTrainParams, channels: int, classes: int) -> NetSize:
    side, pack = params.image_size, params.pack
    c_in = pack * channels + classes
    net = _NetCounter(c_in * side * side if classes else 0)  # conditional: the image and label maps, concatenated
    norm = not (params.spectral_norm or params.loss == "wgan-gp")
    side //= 2
    net.layer(c_in, params.ndf, side, kernel=GAN_KERNEL_AREA, bias=False, norm=False, kept=1)
    width = params.ndf
    for _ in range(_gan_stages(params.image_size) - 1):
        side //= 2
        net.layer(width, width * 2, side, kernel=GAN_KERNEL_AREA, bias=False, norm=norm, kept=2 if norm else 1)
        width *= 2
    if params.minibatch_std:  # the group's standard deviation joins the last features as one more map
        net.saved += (width + 1) * side * side
    net.layer(width + (1 if params.minibatch_std else 0), 1, 1, kernel=GAN_KERNEL_AREA, bias=False, norm=False, kept=1)
    return _per_pack(net.size(), pack)


def _per_pack(size: NetSize, pack: int) -> NetSize:
    """D sees batch / pack inputs: its activations per (unpacked) sample shrink by ``pack``."""
    return NetSize(size.params, -(-size.saved // pack), -(-size.widest // pack), size.largest_weight)


def _mlp_generator(params: GanTrainParams, out_elements: int) -> NetSize:
    net = _NetCounter(params.nz)
    width = params.nz
    for mult in MLP_G_MULTS:
        # Linear, LeakyReLU (not in place) and batch norm: three outputs kept (two without batch norm)
        kept = 3 if params.g_batchnorm else 2
        net.layer(width, params.ngf * mult, 1, kernel=1, bias=True, norm=params.g_batchnorm, kept=kept)
        width = params.ngf * mult
    net.layer(width, out_elements, 1, kernel=1, bias=True, norm=False, kept=1 if params.points else 2)
    return net.size()


def _mlp_discriminator(params: GanTrainParams, in_elements: int) -> NetSize:
    width = params.pack * in_elements
    net = _NetCounter(0)
    for mult in MLP_D_MULTS:
        net.layer(width, params.ndf * mult, 1, kernel=1, bias=True, norm=False, kept=2)
        width = params.ndf * mult
    net.layer(width, 1, 1, kernel=1, bias=True, norm=False, kept=1)
    return _per_pack(net.size(), params.pack)


def _multiscale_widths(base: int, image_size: int) -> list[tuple[int, int]]:
    """(width, side) at 4, 8, ..., image_size."""
    sides = [GAN_BASE_SIDE * 2**i for i in range(_gan_stages(image_size) + 1)]
    return [(base * min(MAX_WIDTH_MULT, image_size // side), side) for side in sides]


def _multiscale_generator(params: GanTrainParams, channels: int) -> NetSize:
    levels = _multiscale_widths(params.ngf, params.image_size)
    net = _NetCounter(params.nz)
    net.layer(params.nz, levels[0][0], GAN_BASE_SIDE, kernel=GAN_KERNEL_AREA, bias=False, norm=True, kept=2)
    for (w_in, _), (w_out, side) in itertools.pairwise(levels):
        net.layer(w_in, w_out, side, kernel=GAN_KERNEL_AREA, bias=False, norm=True, kept=2)
    msg = params.arch == "msg"
    for width, side in levels:  # toRGB at every scale: MSG runs them all (and tanh), progressive the top one
        net.params += width * channels + channels
        if msg or side == params.image_size:
            net.tensor(2 * channels * side * side)
    if not msg:  # progressive fade-in: the previous scale's RGB, upsampled, and the lerp
        net.tensor(3 * channels * params.image_size**2)
    return net.size()


def _multiscale_discriminator(params: GanTrainParams, channels: int) -> NetSize:
    levels = _multiscale_widths(params.ndf, params.image_size)
    msg = params.arch == "msg"
    net = _NetCounter(0)
    for width, side in levels:  # fromRGB (1 x 1 conv and a LeakyReLU, not in place) at every scale
        net.params += channels * width + width
        if side == params.image_size:
            net.tensor(2 * width * side * side)
    extra = channels if msg else 0
    top = len(levels) - 2
    for i in range(len(levels) - 1):
        (w_out, side), (w_in, _) = levels[i], levels[i + 1]
        c_in = w_in + (extra if i < top else 0)
        if msg and i < top:  # the scale's image joins the features: a concatenated copy
            net.tensor(c_in * levels[i + 1][1] ** 2)
        net.layer(c_in, w_out, side, kernel=GAN_KERNEL_AREA, bias=True, norm=False, kept=2)
    net.layer(levels[0][0] + extra, 1, 1, kernel=GAN_KERNEL_AREA, bias=True, norm=False, kept=1)
    if msg:  # real images' pyramid (average pools)
        net.tensor(sum(channels * side * side for _w, side in levels[:-1]))
    else:  # progressive fade-in: fromRGB of the pooled image and the lerp
        net.tensor(3 * levels[-1][0] * (params.image_size // 2) ** 2)
    return net.size()


def gan_networks(params: GanTrainParams, num_classes: int = 0) -> tuple[NetSize, NetSize]:
    """(G, D) sizes of a gan.train job; ``num_classes`` matters for conditional runs only."""
    channels = params.resolved_channels()
    classes = num_classes if params.conditional else 0
    if params.arch == "mlp":
        elements = POINT_DIM if params.points else channels * params.image_size**2
        return _mlp_generator(params, elements), _mlp_discriminator(params, elements)
    if params.arch in ("progressive", "msg"):
        return _multiscale_generator(params, channels), _multiscale_discriminator(params, channels)
    return _dcgan_generator(params, channels, classes), _dcgan_discriminator(params, channels, classes)


@dataclass(frozen=True)
class GanMemory:
    """A gan.train job's estimated peak memory, by part, in bytes."""

    state: int  # weights, gradients, Adam's moments, the EMA generator, autocast's weight copies
    activations: int  # one training step's saved activations, their gradients and workspace
    between_steps: int  # sampling passes and the checkpoint's serialised copies
    overhead: int

    @property
    def total(self) -> int:
        """The estimated peak."""
        return self.state + max(self.activations, self.between_steps) + self.overhead


def gan_memory(params: GanTrainParams, *, num_classes: int = DEFAULT_CONDITIONAL_CLASSES) -> GanMemory:
    """Estimated peak memory of a gan.train job (``num_classes``: a conditional run's class count)."""
    net_g, net_d = gan_networks(params, num_classes)
    weights = net_g.params + net_d.params
    ema = net_g.params if params.ema is not None else 0
    autocast = BF16_WEIGHT_BYTES * weights if params.precision != "fp32" else 0
    state = (weights * (1 + GRAD_COPIES + ADAM_MOMENTS) + ema) * FLOAT_BYTES + autocast
    # Adam on CPU updates one tensor at a time with a temporary of its size; spectral norm makes
    # a normalised copy of every D weight per forward pass
    state += 2 * max(net_g.largest_weight, net_d.largest_weight) * FLOAT_BYTES
    d_graphs = D_GRAPHS + (GP_D_GRAPHS if params.loss == "wgan-gp" else 0) + (R1_D_GRAPHS if params.r1_gamma else 0)
    if params.spectral_norm:
        state += d_graphs * net_d.params * FLOAT_BYTES

    sample = POINT_DIM if params.points else params.resolved_channels() * params.image_size**2
    pixels = 0 if params.points else params.image_size**2
    augment = len(params.diffaugment) * AUGMENT_FLOATS_PER_PIXEL * pixels
    per_sample = net_g.saved + d_graphs * (net_d.saved + augment) + 2 * sample  # + the real batch and its gradient
    activations = int(GAN_ACTIVATION_FACTOR * params.batch_size * per_sample * FLOAT_BYTES)

    batches = [FIXED_POINTS_COUNT if params.points else FIXED_NOISE_COUNT]
    if params.ema is not None:
        batches.append(BN_RECAL_SIZE)
    if params.image_metrics and not params.points:
        batches.append(EVAL_CHUNK)
    sampling = int(GAN_FORWARD_ONLY_FACTOR * max(batches) * net_g.widest * FLOAT_BYTES)
    checkpoint = CHECKPOINT_COPIES * (weights * (1 + ADAM_MOMENTS) + ema) * FLOAT_BYTES
    return GanMemory(state, activations, max(sampling, checkpoint), GAN_OVERHEAD_BYTES)


def gan_memory_bytes(params: GanTrainParams, *, num_classes: int = DEFAULT_CONDITIONAL_CLASSES) -> int:
    """Estimated peak memory of a gan.train job, in bytes."""
    return gan_memory(params, num_classes=num_classes).total


def gan_sample_memory_bytes(source: GanTrainParams, n: int, *, num_classes: int = DEFAULT_CONDITIONAL_CLASSES) -> int:
    """Estimated peak memory of drawing ``n`` images from ``source``'s generator, in bytes."""
    net_g, _net_d = gan_networks(source, num_classes)
    sample = POINT_DIM if source.points else source.resolved_channels() * source.image_size**2
    chunk = GAN_FORWARD_ONLY_FACTOR * min(n, SAMPLE_CHUNK) * net_g.widest
    outputs = SAMPLE_OUTPUT_COPIES * n * sample
    weights = CHECKPOINT_COPIES * net_g.params  # the file's bytes, the loaded state_dict, the network
    return int((chunk + outputs + weights) * FLOAT_BYTES + GAN_OVERHEAD_BYTES)
