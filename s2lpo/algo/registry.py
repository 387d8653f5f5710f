"""A named registry of functions filled by a decorator (verl's ``register_policy_loss`` pattern), shared by the
off-policy corrections and the rewards. Pure: imports nothing of ours."""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

F = TypeVar("F", bound=Callable)


class Registry(dict[str, F], Generic[F]):
    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind  # "reward", "off-policy correction": names the registry in its errors

    def register(self, name: str) -> Callable[[F], F]:
        def deco(fn: F) -> F:
            if name in self and self[name] is not fn:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self[name] = fn
            return fn

        return deco

    def get_fn(self, name: str) -> F:
        if name not in self:
            raise ValueError(f"{self.kind} {name!r} is unknown; registered: {', '.join(self)}")
        return self[name]
