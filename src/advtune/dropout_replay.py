"""Dropout-mask reuse (FreeLB section 3.3): every forward pass of a step draws the same dropout masks.

:class:`RNGState` captures the CPU/CUDA generator state once per step and :meth:`RNGState.replay`
restores it before each repeated forward. :func:`dropout_rng` is the one place that decides whether
a step replays (the method asks for it and the model is training), so every multi-pass method agrees.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


class RNGState:
    """A snapshot of the CPU (and one CUDA device's) RNG, replayed to reuse dropout masks.

    Usage (FreeLB §3.3, the same mask ``m_0`` for all K ascent steps)::

        rng = RNGState.capture(device)
        for t in range(K):
            with rng.replay():
                loss = forward(...)

    :meth:`replay` restores the captured state on entry and leaves the generator where the forward
    left it on exit, so code after the last replay continues the stream exactly as after a single
    forward (the next step gets fresh masks). Capture *after* drawing δ's random init, otherwise
    the first forward's dropout would reuse the init's random numbers.
    """

    def __init__(self, cpu: torch.Tensor, cuda: torch.Tensor | None, device: torch.device) -> None:
        self.cpu, self.cuda, self.device = cpu, cuda, device

    @classmethod
    def capture(cls, device: torch.device | str | None = None) -> RNGState:
        dev = torch.device(device) if device is not None else torch.device("cpu")
        cuda = None
        if dev.type == "cuda" and torch.cuda.is_available():
            cuda = torch.cuda.get_rng_state(dev)
        return cls(torch.get_rng_state(), cuda, dev)

    def restore(self) -> None:
        torch.set_rng_state(self.cpu)
        if self.cuda is not None:
            torch.cuda.set_rng_state(self.cuda, self.device)

    @contextlib.contextmanager
    def replay(self) -> Iterator[None]:
        self.restore()
        yield


def dropout_rng(reuse: bool, model: torch.nn.Module, device: torch.device | str | None) -> RNGState | None:
    """The step's RNG snapshot when dropout masks are reused, else ``None``.

    Only a training model draws dropout masks; in eval mode a replay would only rewind the stream
    (the next random init would repeat this one), so there is nothing to capture.
    """
    return RNGState.capture(device) if reuse and model.training else None


@contextlib.contextmanager
def maybe_replay(rng: RNGState | None) -> Iterator[None]:
    """``rng.replay()`` when dropout reuse is on, a no-op otherwise."""
    if rng is None:
        yield
    else:
        with rng.replay():
            yield


__all__ = ["RNGState", "dropout_rng", "maybe_replay"]
