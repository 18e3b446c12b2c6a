"""The two-phase GAN training loop: D steps on real and fake samples, then a G step; the loss and remedies are params.

Pure PyTorch. Everything about where the job runs (metrics, checkpoints, artifacts,
warnings, cancellation) goes through ``hooks``. On CPU a run is deterministic, and a run
resumed from any checkpoint ends with weights bit-identical to an uninterrupted one: every
random stream is a dedicated ``torch.Generator``, and the data order is a function of the step.
"""

from __future__ import annotations

from functools import partial

import torch
from torch import nn

from shared.jobs.gan_train import GanTrainParams
from shared.jobs.params import MIN_CLASSES
from workers.gan.evaluation import DIVERSITY_METRIC, evaluate_images, evaluate_points, generate, sample_picture
from workers.gan.features import ImageEvaluator
from workers.gan.health import COLLAPSE_DIVERSITY, COLLAPSE_WARNING, LOSS_NAMES, Monitor, may_warn, watch_d
from workers.gan.losses import mode_seeking_loss
from workers.gan.metrics import diversity
from workers.gan.multiscale import (
    MSG,
    PROGRESSIVE,
    MultiScaleDiscriminator,
    MultiScaleGenerator,
    Stage,
    progressive_stage,
)
from workers.gan.nets import (
    num_stages,
)
from workers.gan.objective import GanLoss, detached, generate_for
from workers.gan.plots import INTERPOLATION_ROWS, interpolation_png, loss_curve_png
from workers.gan.sample import generator_file, latents
from workers.gan.state import STREAM_INTERPOLATION, DataOrder, Models, sample_shape, stream_seed
from workers.hooks import StopRequested, TrainHooks
from workers.training import (
    BINARY_CONTENT_TYPE,
    PLOT_KIND,
    PNG_CONTENT_TYPE,
    SAMPLE_KIND,
    WEIGHTS_KIND,
    DivergenceWatch,
    MetricLog,
    SpeedPath,
    StepCompile,
    cudnn_autotune,
    to_device,
)

FIXED_NOISE_COUNT = 64
FIXED_POINTS_COUNT = 1000  # a point dataset's "grid" is a scatter plot of this many fixed-noise samples
METRIC_NAMES = (*LOSS_NAMES, "d_real", "d_fake", "grad_norm_d", "grad_norm_g", "lr_d", "lr_g", "d_skips")
RESOLUTION_METRIC = "resolution"  # progressive and MSG runs: the resolution being trained
FADE_METRIC = "fade_alpha"  # ... and how far its fade-in has got (1: fully in)
SAMPLE_ARTIFACT = "samples/step-{step:07d}.png"
FINAL_SAMPLE_ARTIFACT = "samples/final.png"
INTERPOLATION_ARTIFACT = "samples/interpolation.png"  # rows of slerp walks between seeded latents
LOSS_PLOT_ARTIFACT = "plots/losses.png"
GENERATOR_ARTIFACT = "generator.pt"
DIVERGED = "training"
DIVERGED_ADVICE = "try lower learning rates"
_IMAGE_RANGE = (-1.0, 1.0)


def _report_step(
    params: GanTrainParams,
    hooks: TrainHooks,
    monitor: Monitor,
    step: int,
    metrics: dict[str, float],
    stage: Stage | None,
) -> None:
    """One flushed step: the loss plot's history, the metrics, the stage, and the D-won watch."""
    monitor.history.add(step, [metrics[name] for name in LOSS_NAMES])
    hooks.report_metrics(step, metrics)
    if stage is not None:
        hooks.report_metrics(step, {RESOLUTION_METRIC: float(stage.resolution()), FADE_METRIC: stage.alpha})
    watch_d(params, monitor, hooks, step, metrics["d_loss"])


def _check_data(params: GanTrainParams, channels: int, data: torch.Tensor) -> None:
    expected = sample_shape(params, channels)
    if data.ndim != len(expected) + 1 or tuple(data.shape[1:]) != expected or data.shape[0] == 0:
        raise ValueError(f"data must have shape (N>0, {', '.join(map(str, expected))}), got {tuple(data.shape)}")
    if not data.is_floating_point():
        what = "finite" if params.points else "in [-1, 1]"
        raise ValueError(f"data must be floating point {what}, got {data.dtype}")
    if params.points:
        if not bool(torch.isfinite(data).all()):
            raise ValueError("data values must be finite")
        return
    low, high = _IMAGE_RANGE
    if not bool(((data >= low) & (data <= high)).all()):  # also rejects NaN
        raise ValueError("data values must lie in [-1, 1]")


def _set_stage(params: GanTrainParams, models: Models, step: int) -> Stage | None:
    """The multi-scale stage of ``step`` (progressive: growing; MSG: every scale at once), set on the nets."""
    if params.arch == MSG:
        return Stage(num_stages(params.image_size), 1.0)
    if params.arch != PROGRESSIVE:
        return None
    stage = progressive_stage(step, params.steps, params.image_size)
    for net in (models.net_g, models.net_d, models.ema_g):
        if isinstance(net, MultiScaleGenerator | MultiScaleDiscriminator):
            net.set_stage(stage)
    return stage


def _check_labels(params: GanTrainParams, data: torch.Tensor, labels: torch.Tensor | None, num_classes: int) -> int:
    """The class count a conditional run uses (0 when not conditional); ValueError if the labels don't fit."""
    if not params.conditional:
        return 0
    if labels is None or num_classes < MIN_CLASSES:
        raise ValueError(f"conditional training needs a dataset with at least {MIN_CLASSES} classes")
    if labels.shape != (data.shape[0],) or labels.dtype != torch.int64:
        raise ValueError(f"labels must be int64 of shape ({data.shape[0]},), got {labels.dtype} {tuple(labels.shape)}")
    if int(labels.min()) < 0 or int(labels.max()) >= num_classes:
        raise ValueError(f"labels must lie in 0 .. {num_classes - 1}")
    return num_classes


def _grad_norm(net: nn.Module) -> torch.Tensor:
    """L2 norm of all of ``net``'s gradients (0 when it has none), without a host sync."""
    grads = [p.grad for p in net.parameters() if p.grad is not None]
    if not grads:
        return torch.zeros(())
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))


def _learning_rates(params: GanTrainParams, step: int) -> tuple[float, float]:
    """(lr_d, lr_g) for ``step``: constant, or falling linearly from the set rates to zero at the end."""
    if params.lr_decay == "linear":
        scale = 1.0 - (step - 1) / params.steps
        return params.lr_d * scale, params.lr_g * scale
    return params.lr_d, params.lr_g


def _set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def train(
    params: GanTrainParams,
    data: torch.Tensor,
    hooks: TrainHooks,
    *,
    device: torch.device | str = "cpu",
    labels: torch.Tensor | None = None,
    num_classes: int = 0,
    evaluator: ImageEvaluator | None = None,
) -> dict[str, int | float]:
    """Train a GAN on ``data`` ((N, C, H, W) in [-1, 1], or (N, 2) points), resuming from the hooks' checkpoint.

    With ``params.conditional``, ``labels`` (N,) holds each image's class in 0 .. num_classes - 1.
    ``evaluator`` scores image samples (fd, kid, precision, recall) at evaluation ticks; point
    datasets are always scored by mode coverage.
    """
    device = torch.device(device)
    with cudnn_autotune(device):  # the steps' shapes are fixed: let cuDNN time its algorithms once
        return _train(params, data, hooks, device=device, labels=labels, num_classes=num_classes, evaluator=evaluator)


def _train(
    params: GanTrainParams,
    data: torch.Tensor,
    hooks: TrainHooks,
    *,
    device: torch.device,
    labels: torch.Tensor | None,
    num_classes: int,
    evaluator: ImageEvaluator | None,
) -> dict[str, int | float]:
    channels = params.resolved_channels()
    _check_data(params, channels, data)
    classes = _check_labels(params, data, labels, num_classes)
    batch_size = params.batch_size

    # ---- Set up: nets, optimizers, random streams; resume if a checkpoint exists ----
    speed = SpeedPath.of(params.precision, device)
    models = Models.create(params, channels, device, num_classes=classes)
    if speed.channels_last and params.arch != "mlp":
        for net in (models.net_g, models.net_d, models.ema_g):
            if net is not None:
                net.to(memory_format=torch.channels_last)
    net_g, net_d, opt_g, opt_d = models.net_g, models.net_d, models.opt_g, models.opt_d
    done = 0
    metrics: dict[str, float] = {}
    monitor = Monitor()
    checkpoint = hooks.load_checkpoint()
    if checkpoint is not None:
        done, metrics, monitor = models.restore(checkpoint, params)
    if data.shape[0] < batch_size:
        hooks.warn(f"the dataset has {data.shape[0]} images, fewer than batch_size {batch_size}: batches repeat images")
    order = DataOrder(size=data.shape[0], batch_size=batch_size, seed=params.seed, device=data.device)
    fixed_count = FIXED_POINTS_COUNT if params.points else FIXED_NOISE_COUNT
    # Conditional grids: one row per class, as many columns as fit in FIXED_NOISE_COUNT.
    per_row = max(1, FIXED_NOISE_COUNT // classes) if classes else None
    fixed_labels = torch.arange(classes * per_row, device=device) // per_row if classes and per_row else None
    if fixed_labels is not None:
        fixed_count = fixed_labels.shape[0]
    fixed_noise = latents(fixed_count, params.nz, seed=params.seed).to(device)
    reference = data.index_select(
        0, DataOrder(size=data.shape[0], batch_size=fixed_count, seed=params.seed).indices(1).to(data.device)
    )
    data_spread = diversity(reference)
    objective = GanLoss.of(params, models.aux)
    # Opt-in (params.compile; dcgan and mlp, no gradient penalty): the step's G and D passes compiled.
    # Samples, penalties and checkpoints use the plain nets, which share the compiled ones' weights.
    step_compile = StepCompile.of(params.compile, device)
    if step_compile.note is not None:
        hooks.warn(step_compile.note)
    step_d = step_compile.apply(net_d)
    g_forward = generate_for(params, step_compile.apply(net_g))
    zero = torch.zeros((), device=device)  # the grad-norm metric of a step that took no D update
    skip_below = params.d_skip_threshold
    eval_every = params.resolved_eval_every()
    watch = DivergenceWatch(LOSS_NAMES, device, what=DIVERGED, advice=DIVERGED_ADVICE)
    metric_log: MetricLog[Stage | None] = MetricLog(
        METRIC_NAMES, watch, partial(_report_step, params, hooks, monitor), last=metrics
    )
    picture: tuple[int, bytes] | None = None
    net_g.train()
    net_d.train()

    for step in range(done + 1, params.steps + 1):
        last = step == params.steps
        log = step % params.log_every == 0 or last
        grad_norm_d = zero
        stage = _set_stage(params, models, step)
        lr_d, lr_g = _learning_rates(params, step)
        _set_lr(opt_d, lr_d)
        _set_lr(opt_g, lr_g)

        # ---- D steps (n_critic of them): minimise D's loss on real and fake samples ----
        for critic in range(params.n_critic):
            update = (step - 1) * params.n_critic + critic + 1
            batch_index = order.indices(update)  # on the data's device
            real = to_device(data.index_select(0, batch_index), device)
            # Conditional: the fakes of this step are asked for the real batch's classes.
            batch_labels = (
                to_device(labels.index_select(0, batch_index), device) if classes and labels is not None else None
            )
            final_critic = critic == params.n_critic - 1
            net_d.zero_grad(set_to_none=True)
            if objective.needs_real_grad:
                real.requires_grad_(True)
            if speed.channels_last and real.dim() == 4:  # images; 2-D points have no channels to reorder
                real = real.contiguous(memory_format=torch.channels_last)
            z = torch.randn(batch_size, params.nz, 1, 1, generator=models.noise, device=device)
            with speed.autocast():
                out_real = objective.judge(step_d, real, batch_labels)
                with torch.set_grad_enabled(final_critic):  # only the last fakes feed the G step
                    fake = g_forward(z, batch_labels)
                out_fake = objective.judge(step_d, detached(fake), batch_labels)
            d_loss = objective.discriminator(out_real, out_fake)
            if skip_below is not None and float(d_loss) < skip_below:
                monitor.d_skips += 1  # the lesson's remedy: let G catch up while D is far ahead
                continue
            total = objective.penalised(d_loss, net_d, real=real, fake=fake, out_real=out_real, labels=batch_labels)
            total.backward()
            if log and final_critic:
                grad_norm_d = _grad_norm(net_d)
            opt_d.step()

        # ---- G step: minimise G's loss through D, reusing the last D step's fakes ----
        net_g.zero_grad(set_to_none=True)
        net_d.requires_grad_(False)  # D's weight gradients are not needed here
        with speed.autocast():
            out_g = objective.judge(step_d, fake, batch_labels)
        g_loss = objective.generator(out_g)
        if params.mode_seeking:  # reported g_loss stays the adversarial part
            finest = fake[-1] if isinstance(fake, list) else fake  # msg: the full-size images of its pyramid
            (g_loss + params.mode_seeking * mode_seeking_loss(finest, z)).backward()
        else:
            g_loss.backward()
        net_d.requires_grad_(True)
        grad_norm_g = _grad_norm(net_g) if log else zero
        opt_g.step()
        if params.ema is not None:
            models.update_ema(params.ema, step)
        watch.observe(step, torch.stack([d_loss.detach(), g_loss.detach()]))

        # ---- Report, sample, evaluate, checkpoint (in that order: a checkpoint marks the step complete) ----
        sample = step % params.sample_every == 0 or last
        evaluate = (params.points or evaluator is not None) and (step % eval_every == 0 or last)
        saved = step % params.checkpoint_every == 0 or last
        if log:
            with torch.no_grad():
                on_device = torch.stack(
                    [
                        d_loss.detach().float(),
                        g_loss.detach().float(),
                        objective.d_outputs(out_real.detach()).float(),
                        objective.d_outputs(out_fake.detach()).float(),
                        grad_norm_d.to(device).float(),
                        grad_norm_g.to(device).float(),
                    ]
                )
            metric_log.add(step, on_device, [lr_d, lr_g, float(monitor.d_skips)], stage)
        hooks.report_progress(step, params.steps)  # host-side bookkeeping, no sync
        if sample or saved or evaluate or metric_log.due():
            metric_log.flush()  # the only device sync of a step that does none of these
        metrics = metric_log.last
        if sample or evaluate:
            sampler = models.sampler_at(params, step)
        if sample:
            samples = generate(sampler, fixed_noise, fixed_labels)
            picture = (step, sample_picture(params, samples, per_row))
            hooks.save_artifact(
                SAMPLE_ARTIFACT.format(step=step), picture[1], kind=SAMPLE_KIND, content_type=PNG_CONTENT_TYPE
            )
            spread = diversity(samples) / data_spread if data_spread > 0 else 0.0
            hooks.report_metrics(step, {DIVERSITY_METRIC: spread})
            if spread < COLLAPSE_DIVERSITY and may_warn(params, step):
                detail = f"the samples spread {spread:.0%} as much as the data"
                monitor.warn_once(hooks, "collapse", COLLAPSE_WARNING.format(step=step, detail=detail))
        if evaluate and params.points:
            evaluate_points(params, sampler, monitor, hooks, step)
        elif evaluate and evaluator is not None:
            evaluate_images(params, sampler, evaluator, hooks, step, classes, monitor)
        if saved:
            hooks.save_checkpoint(step, models.checkpoint(step, params, metrics, monitor))

        # ---- Cooperative stop: checkpoint this step, then leave ----
        reason = hooks.should_stop()
        if reason is not None:
            if not saved:
                metric_log.flush()
                metrics = metric_log.last
                hooks.save_checkpoint(step, models.checkpoint(step, params, metrics, monitor))
            raise StopRequested(reason, step)

    # ---- Final artifacts ----
    sampler = models.sampler_at(params, params.steps)
    if picture is not None and picture[0] == params.steps:
        final_png = picture[1]
    else:
        final_png = sample_picture(params, generate(sampler, fixed_noise, fixed_labels), per_row)
    hooks.save_artifact(FINAL_SAMPLE_ARTIFACT, final_png, kind=SAMPLE_KIND, content_type=PNG_CONTENT_TYPE)
    hooks.save_artifact(
        LOSS_PLOT_ARTIFACT,
        loss_curve_png(monitor.history, title=f"d_loss and g_loss ({params.loss}), steps 1-{params.steps}"),
        kind=PLOT_KIND,
        content_type=PNG_CONTENT_TYPE,
    )
    if not params.points:
        rows = torch.arange(INTERPOLATION_ROWS) % classes if classes else None
        strip = interpolation_png(
            sampler, params.nz, seed=stream_seed(params.seed, STREAM_INTERPOLATION), device=device, labels=rows
        )
        hooks.save_artifact(INTERPOLATION_ARTIFACT, strip, kind=SAMPLE_KIND, content_type=PNG_CONTENT_TYPE)
    hooks.save_artifact(
        GENERATOR_ARTIFACT,
        generator_file(sampler, params.model_dump()),
        kind=WEIGHTS_KIND,
        content_type=BINARY_CONTENT_TYPE,
    )
    return {"steps": params.steps, "resumed_from": done, **metrics}
