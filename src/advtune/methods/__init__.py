"""The method registry: one literal dict, ``get_method()`` and ``register_method()``.

Adding a method: ``methods/<name>.py`` (config + class) and one line in ``METHODS``; its
``docs/methods/<name>.md`` page and a ``configs/<name>_*.yaml`` preset are required by a test over
the registry, and the contract, family and launcher tests run over every entry of ``METHODS``.
"""

from __future__ import annotations

import inspect
from typing import Any

from ..errors import UsageError
from .base import METHOD_STATE_FILE, Backward, Method, MethodConfig, StepOutput
from .cat import CAT
from .fgm import FGM
from .freeat import FreeAT
from .freelb import FreeLB
from .peaft import PEAFT
from .pgd import PGD
from .r3f import R3F
from .r4f import R4F
from .rose import ROSE
from .smart import SMART
from .standard import Standard
from .tat import TAT
from .vat import VAT
from .yopo import YOPO

METHODS: dict[str, type[Method]] = {
    "standard": Standard,
    "fgm": FGM,
    "pgd": PGD,
    "freeat": FreeAT,
    "freelb": FreeLB,
    "yopo": YOPO,
    "peaft": PEAFT,
    "rose": ROSE,
    "vat": VAT,
    "smart": SMART,
    "tat": TAT,
    "cat": CAT,
    "r3f": R3F,
    "r4f": R4F,
}


def register_method(cls: type[Method]) -> type[Method]:
    """Register a user's own :class:`Method` subclass under ``cls.name``.

    The pipeline calls ``setup(model, tokenizer=..., task=...)``; an override written for the older
    ``setup(model)`` is refused here rather than failing after the data and model are loaded.
    """
    if not cls.name:
        raise UsageError(f"{cls.__name__} has no name")
    params = inspect.signature(cls.setup).parameters
    if not ({"tokenizer", "task"} <= set(params) or any(p.kind is p.VAR_KEYWORD for p in params.values())):
        raise UsageError(f"{cls.__name__}.setup must accept tokenizer=None and task=None keywords")
    METHODS[cls.name] = cls
    return cls


def get_method_class(name: str) -> type[Method]:
    try:
        return METHODS[name]
    except KeyError:
        raise UsageError(f"unknown method '{name}' (choose from: {', '.join(sorted(METHODS))})") from None


def get_method(name: str, config: MethodConfig | None = None, **overrides: Any) -> Method:
    """Build a method by name, e.g. ``get_method("freelb", adv_steps=3)``."""
    return get_method_class(name)(config, **overrides)


__all__ = [
    "METHODS",
    "METHOD_STATE_FILE",
    "Backward",
    "Method",
    "MethodConfig",
    "StepOutput",
    "get_method",
    "get_method_class",
    "register_method",
]
