"""Run health: D skips, the D-has-won streak and mode-collapse warnings, each warning given once.

The monitor is checkpointed with the run, so a resumed run neither repeats a warning nor
forgets a streak.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from shared.jobs.gan_train import GanTrainParams
from workers.gan import losses
from workers.gan.plots import LossHistory
from workers.hooks import TrainHooks

LOSS_NAMES = ("d_loss", "g_loss")
# Health warnings.
# Health warnings.
D_WON_LOSS = 0.05  # bce/hinge: D's loss below this means it tells real from fake almost perfectly
D_WON_STEPS = 200  # ... for this many steps in a row
COLLAPSE_DIVERSITY = 0.2  # samples spread less than this share of the data's spread
COLLAPSE_MODES = 0.5  # point datasets: fewer than this share of the modes captured
# No collapse warnings before this many steps, nor in the first quarter of a run: early samples are still forming.
WARN_AFTER = 0.25
WARN_MIN_STEP = 200
D_WON_WARNING = (
    "D has won: its loss stayed below {loss} from step {start} to step {step}; G gets little signal. "
    "Try a lower lr_d, d_skip_threshold, label_smoothing or the stable preset"
)
COLLAPSE_WARNING = "possible mode collapse at step {step}: {detail}. Try the stable preset, spectral_norm or ema"


@dataclass
class Monitor:
    """Run-health state carried across steps (and checkpoints): D skips, the D-won streak, warnings given."""

    d_skips: int = 0
    d_won_since: int = 0  # first logged step of the current streak of tiny D losses; 0: none
    warned: list[str] = field(default_factory=list)
    history: LossHistory = field(default_factory=lambda: LossHistory(LOSS_NAMES))  # for plots/losses.png

    def state(self) -> dict[str, Any]:
        """Checkpointable form."""
        return {
            "d_skips": self.d_skips,
            "d_won_since": self.d_won_since,
            "warned": list(self.warned),
            "history": self.history.state(),
        }

    @classmethod
    def from_state(cls, state: dict[str, Any] | None) -> Monitor:
        """Rebuild from ``state`` (None: a fresh monitor)."""
        if not state:
            return cls()
        return cls(
            int(state["d_skips"]),
            int(state["d_won_since"]),
            [str(w) for w in state["warned"]],
            LossHistory.from_state(LOSS_NAMES, state.get("history")),
        )

    def warn_once(self, hooks: TrainHooks, kind: str, message: str) -> None:
        """Send a warning of ``kind`` the first time only."""
        if kind not in self.warned:
            self.warned.append(kind)
            hooks.warn(message)


def may_warn(params: GanTrainParams, step: int) -> bool:
    """Whether a run is far enough along for collapse warnings."""
    return step >= max(WARN_MIN_STEP, WARN_AFTER * params.steps)


def watch_d(params: GanTrainParams, monitor: Monitor, hooks: TrainHooks, step: int, d_loss: float) -> None:
    """Warn once when D's loss stays near zero for D_WON_STEPS steps (bce and hinge only)."""
    if params.loss == losses.WGAN_GP:
        return
    if d_loss >= D_WON_LOSS:
        monitor.d_won_since = 0
        return
    if not monitor.d_won_since:
        monitor.d_won_since = step
    if step - monitor.d_won_since >= D_WON_STEPS:
        message = D_WON_WARNING.format(loss=D_WON_LOSS, start=monitor.d_won_since, step=step)
        monitor.warn_once(hooks, "d_won", message)
