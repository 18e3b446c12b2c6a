"""Hyperparameter sweeps: one job type, base params, a search (a grid over any params, or random draws over
ranges, log-uniform for rates), a list of seeds, an objective and ``max_parallel``. A sweep expands into
trials, each an ordinary job of that type (validated, admitted and scheduled like any other: fair share,
quotas), of which at most ``max_parallel`` run at once (the claim's pick holds the rest back:
shared/db/queries/scheduling.py). Nothing here imports torch.
"""

from __future__ import annotations

import itertools
import math
import random
import statistics
from dataclasses import asdict, dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

MAX_TRIALS = 100
MAX_PARALLEL = 32
MAX_GRID_VALUES = 50
SEED_PARAM = "seed"
DEFAULT_SEED = 0

# The metrics a sweep may optimise, per job type, and which way is better by default.
OBJECTIVE_METRICS: dict[str, dict[str, Literal["min", "max"]]] = {
    "gan.train": {
        "fd": "min",
        "kid": "min",
        "precision": "max",
        "recall": "max",
        "hq_share": "max",
        "modes": "max",
        "class_kl": "min",
        "class_confidence": "max",
        "diversity": "max",
        "g_loss": "min",
        "d_loss": "min",
    },
    "style.transfer": {"total_loss": "min", "style_loss": "min", "content_loss": "min"},
    "style.train": {"total_loss": "min", "style_loss": "min", "content_loss": "min"},
}


class Range(BaseModel):
    """A random-search dimension: uniform (or log-uniform) between low and high, or one of choices."""

    model_config = ConfigDict(extra="forbid")

    low: float | None = None
    high: float | None = None
    log: bool = Field(default=False, description="Draw log-uniformly (for learning rates); needs low > 0")
    integer: bool = Field(default=False, description="Round the draw to an integer")
    choices: list[Any] | None = Field(default=None, min_length=1, description="Draw one of these instead")

    @model_validator(mode="after")
    def _one_kind(self) -> Range:
        if self.choices is not None:
            if self.low is not None or self.high is not None:
                raise ValueError("give choices, or low and high, not both")
            return self
        if self.low is None or self.high is None:
            raise ValueError("give low and high (or choices)")
        if not self.low < self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError(f"a log-uniform range needs low > 0, got {self.low}")
        return self

    def draw(self, rng: random.Random) -> Any:
        """One value."""
        if self.choices is not None:
            return rng.choice(self.choices)
        assert self.low is not None and self.high is not None
        if self.log:
            value = math.exp(rng.uniform(math.log(self.low), math.log(self.high)))
        else:
            value = rng.uniform(self.low, self.high)
        return round(value) if self.integer else value


class Objective(BaseModel):
    """What makes a trial better: the last reported value of one metric, lower or higher."""

    model_config = ConfigDict(extra="forbid")

    metric: str = Field(description="A metric the job type reports, e.g. fd or hq_share (gan.train)")
    mode: Literal["min", "max"] | None = Field(default=None, description="Default: the metric's natural way")


class EarlyStopping(BaseModel):
    """Stop trials that are behind at evaluation ticks; they end as stopped_early with their checkpoint kept.

    median: at every tick (min_steps, then every ``interval`` steps), stop a trial whose best objective so far
    is worse than the median of the other trials' running means up to that step (the Median Stopping Rule of
    Google Vizier). asha: ticks are rungs at min_steps x reduction_factor^k; a trial reaching a rung goes on
    only while it is in the best 1/reduction_factor of the trials that reached that rung so far (ASHA's
    stopping variant: Li et al. 2020). Either way only trials that reached the tick count, a trial is never
    stopped before ``min_steps``, and never while fewer than ``min_trials`` others reached the tick.
    """

    model_config = ConfigDict(extra="forbid")

    rule: Literal["median", "asha"] = Field(default="median", description="median stopping, or ASHA rungs")
    min_steps: int = Field(ge=1, description="The first tick: no trial is stopped before this step")
    interval: int | None = Field(
        default=None, ge=1, description="median: ticks every this many steps after min_steps (default min_steps)"
    )
    reduction_factor: int = Field(default=3, ge=2, le=8, description="asha: the best 1/this of a rung go on")
    min_trials: int = Field(default=3, ge=1, le=MAX_TRIALS, description="Others that must reach a tick first")

    @model_validator(mode="after")
    def _interval_is_median(self) -> EarlyStopping:
        if self.interval is not None and self.rule != "median":
            raise ValueError("interval is for the median rule; asha's rungs grow by reduction_factor")
        return self

    def ticks(self, total: int) -> list[int]:
        """The steps below ``total`` at which a trial of ``total`` steps is judged."""
        out, step = [], self.min_steps
        while step < total:
            out.append(step)
            step = step + (self.interval or self.min_steps) if self.rule == "median" else step * self.reduction_factor
        return out


@dataclass(frozen=True)
class Standing:
    """One trial's objective at a tick, as the rule reads it."""

    best: float  # the best value reported up to the tick
    mean: float  # the running mean up to the tick
    last: float  # the last value reported up to the tick


@dataclass(frozen=True)
class Verdict:
    """Why a trial was stopped: stored in jobs.early_stop and shown with the trial."""

    rule: str
    step: int
    metric: str
    value: float
    threshold: float
    compared: int
    message: str

    def as_json(self) -> dict[str, Any]:
        """The stored form."""
        return asdict(self)


def judge(
    rule: EarlyStopping, *, metric: str, mode: str, step: int, own: Standing, others: list[Standing]
) -> Verdict | None:
    """Whether the trial ``own`` stops at tick ``step``, judged against the ``others`` that reached it."""
    if step < rule.min_steps or len(others) < rule.min_trials:
        return None
    sign = 1.0 if mode == "min" else -1.0  # lower signed values are better
    worse = "above" if mode == "min" else "below"
    if rule.rule == "median":
        median = statistics.median(o.mean for o in others)
        if sign * own.best <= sign * median:
            return None
        message = (
            f"stopped at step {step}: its best {metric} so far, {own.best:.4g}, is {worse} the median {median:.4g} "
            f"of {len(others)} other trials' running means at that step"
        )
        return Verdict("median", step, metric, own.best, median, len(others), message)
    pool = sorted([sign * own.last] + [sign * o.last for o in others])
    keep = max(1, len(pool) // rule.reduction_factor)
    cutoff = sign * pool[keep - 1]
    if sign * own.last <= sign * cutoff:
        return None
    message = (
        f"stopped at rung {step}: its {metric}, {own.last:.4g}, is not in the best 1/{rule.reduction_factor} "
        f"of the {len(pool)} trials that reached the rung (cutoff {cutoff:.4g})"
    )
    return Verdict("asha", step, metric, own.last, cutoff, len(others), message)


class SweepCreate(BaseModel):
    """POST /v1/sweeps: a job type, base params, a grid or a random search, seeds, an objective."""

    model_config = ConfigDict(extra="forbid")

    type: str = Field(description="The trials' job type: gan.train, style.transfer or style.train")
    base_params: dict[str, Any] = Field(default_factory=dict, description="Params every trial shares")
    grid: dict[str, list[Any]] | None = Field(
        default=None, description="Every combination of these values (one list per param); or use random"
    )
    random: dict[str, Range] | None = Field(default=None, description="Random draws per param; needs trials")
    trials: int | None = Field(default=None, ge=1, le=MAX_TRIALS, description="How many random draws")
    search_seed: int = Field(default=0, ge=0, description="Seeds the random draws, so a sweep can be repeated")
    seeds: list[int] = Field(
        default_factory=lambda: [DEFAULT_SEED],
        min_length=1,
        max_length=MAX_TRIALS,
        description="Each combination runs once per seed (the trial's params.seed)",
    )
    objective: Objective
    max_parallel: int = Field(default=2, ge=1, le=MAX_PARALLEL, description="Trials running at once, at most")
    priority: Literal["low", "normal", "high"] = Field(default="normal", description="The trials' priority")
    early_stopping: EarlyStopping | None = Field(
        default=None, description="Stop trials that are behind at evaluation ticks (median or asha); none: run all"
    )

    @model_validator(mode="after")
    def _one_search(self) -> SweepCreate:
        if (self.grid is None) == (self.random is None):
            raise ValueError("give exactly one of grid and random")
        if self.random is not None and self.trials is None:
            raise ValueError("a random search needs trials (how many draws)")
        if self.grid is not None and self.trials is not None:
            raise ValueError("trials is for a random search; a grid runs every combination")
        for name, values in (self.grid or {}).items():
            if not values or len(values) > MAX_GRID_VALUES:
                raise ValueError(f"grid.{name}: between 1 and {MAX_GRID_VALUES} values")
        varied = set(self.grid or {}) | set(self.random or {})
        if SEED_PARAM in varied:
            raise ValueError("vary seed with seeds, not in the search")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError("seeds: each seed once")
        return self

    def combinations(self) -> list[dict[str, Any]]:
        """The searched params of each combination, before seeds."""
        if self.grid is not None:
            names = list(self.grid)
            return [dict(zip(names, values, strict=True)) for values in itertools.product(*self.grid.values())]
        assert self.random is not None and self.trials is not None
        rng = random.Random(self.search_seed)
        return [{name: dim.draw(rng) for name, dim in self.random.items()} for _ in range(self.trials)]

    def trial_count(self) -> int:
        """How many trials the sweep would make."""
        if self.grid is not None:
            return math.prod(len(v) for v in self.grid.values()) * len(self.seeds)
        return (self.trials or 0) * len(self.seeds)

    def trial_params(self) -> list[tuple[dict[str, Any], dict[str, Any]]]:
        """(searched params with the seed, full raw params) of every trial, combination-major."""
        out = []
        for combo in self.combinations():
            for seed in self.seeds:
                varied = {**combo, SEED_PARAM: seed}
                out.append((varied, {**self.base_params, **varied}))
        return out

    def objective_mode(self) -> Literal["min", "max"] | None:
        """The objective's direction: given, or the metric's natural one (None: an unknown metric)."""
        if self.objective.mode is not None:
            return self.objective.mode
        return OBJECTIVE_METRICS.get(self.type, {}).get(self.objective.metric)
