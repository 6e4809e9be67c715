"""A method decorator: run in eval mode, then restore the mode the module was in."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])


def evaluates(fn: F) -> F:
    """Runs ``fn(self, ...)`` with ``self`` in eval mode (dropout off) and puts the module back
    in the mode it found (a caller's training loop is not switched off behind its back)."""

    @functools.wraps(fn)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        was_training = self.training
        self.eval()
        try:
            return fn(self, *args, **kwargs)
        finally:
            self.train(was_training)

    return wrapper  # type: ignore[return-value]
