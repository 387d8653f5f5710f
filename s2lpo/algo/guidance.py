"""G²RPO-A guidance length controllers (pure state machines, no I/O).

Guidance = the first ``length`` tokens of a problem's reference solution, placed at the start of the
completion of ``k`` of the ``G`` rollouts of a group. The controller decides ``length`` step by step.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class AdaptiveGuidance:
    """G²RPO-A's adaptive rule, as published.

    ``update(step, accuracy)`` is called after training step ``step`` (1-based) with that step's batch
    accuracy over all completions (guided ones included) and returns the length for the next step.
    With ``c = (step - 1) mod period``: ``c == 0`` starts a new buffer ``[acc]``; ``0 < c < period-1``
    appends ``acc``; ``c == period-1`` compares ``acc`` with ``mean(buffer)``: if both are positive,
    ``acc < mean`` grows the guidance ``l = int(min(l * mean / acc, l_max))``, ``acc > mean`` shrinks
    it ``l = max(int(l * mean / acc), 1)``; otherwise ``l`` is unchanged.
    """

    initial_length: int | None = None
    max_length: int = 3072
    period: int = 3
    length: int = field(init=False)
    buffer: list[float] = field(init=False, default_factory=list)

    def __post_init__(self) -> None:
        if self.max_length < 1:
            raise ValueError(f"max_length={self.max_length} must be >= 1")
        if self.period < 2:
            raise ValueError(f"period={self.period} must be >= 2 (a window needs a buffer and a comparison)")
        if self.initial_length is None:
            self.initial_length = self.max_length
        if not 0 <= self.initial_length <= self.max_length:
            raise ValueError(f"initial_length={self.initial_length} must be in [0, max_length={self.max_length}]")
        self.length = self.initial_length

    def update(self, step: int, accuracy: float) -> int:
        if step < 1:
            raise ValueError(f"step={step} must be >= 1 (steps are 1-based)")
        c = (step - 1) % self.period
        if c == 0:
            self.buffer = [accuracy]
        elif c < self.period - 1:
            self.buffer.append(accuracy)
        else:
            mean = sum(self.buffer) / len(self.buffer) if self.buffer else 0.0
            if accuracy > 0 and mean > 0:
                if accuracy < mean:
                    self.length = int(min(self.length * mean / accuracy, self.max_length))
                elif accuracy > mean:
                    self.length = max(int(self.length * mean / accuracy), 1)
        return self.length

    def state_dict(self) -> dict:
        return {"length": self.length, "buffer": list(self.buffer)}

    def load_state_dict(self, state: dict) -> None:
        self.length = int(state["length"])
        self.buffer = [float(x) for x in state["buffer"]]


@dataclass
class LinearDecayGuidance:
    """The published linear-decay variant: ``l_t = floor(l0 * (T - t) / T)``, from ``l0`` to 0 over T steps."""

    initial_length: int
    total_steps: int
    length: int = field(init=False)

    def __post_init__(self) -> None:
        if self.total_steps < 1:
            raise ValueError(f"total_steps={self.total_steps} must be >= 1")
        if self.initial_length < 0:
            raise ValueError(f"initial_length={self.initial_length} must be >= 0")
        self.length = self.initial_length

    def update(self, step: int, accuracy: float) -> int:  # noqa: ARG002 - same interface as AdaptiveGuidance
        self.length = self.initial_length * max(self.total_steps - step, 0) // self.total_steps
        return self.length

    def state_dict(self) -> dict:
        return {"length": self.length}

    def load_state_dict(self, state: dict) -> None:
        self.length = int(state["length"])


def make_guidance(kind: str, initial_length: int | None, max_length: int, period: int, total_steps: int):
    """Build a guidance controller by name: ``adaptive`` (G²RPO-A) or ``linear_decay``."""
    if kind == "adaptive":
        return AdaptiveGuidance(initial_length, max_length, period)
    if kind == "linear_decay":
        return LinearDecayGuidance(max_length if initial_length is None else initial_length, total_steps)
    raise ValueError(f"guidance kind={kind!r} is unknown; choose 'adaptive' or 'linear_decay'")
