"""The method protocol: every training method is a :class:`Method` with a :class:`MethodConfig`.

Two seams:

* single-backward methods implement :meth:`Method.compute_loss`; the default :meth:`Method.step`
  calls it and hands the loss to ``backward``; those whose loss combines clean and perturbed outputs
  run the paired frame (:mod:`advtune.methods.paired`), which can backpropagate it one graph at a time
  (``adv_memory``, :class:`AdvMemoryConfig`);
* multi-backward methods (FreeLB, FreeAT, ...) override :meth:`Method.step` and call ``backward``
  themselves, once per pass.

A method never touches the optimizer, the scheduler, ``zero_grad`` or devices: ``backward`` is
injected (the Trainer passes ``accelerator.backward`` with gradient-accumulation scaling), so the
same class runs under :class:`advtune.trainer.AdversarialTrainer`, accelerate or a plain loop.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, NamedTuple

import torch
import torch.nn.functional as F

from ..errors import UsageError
from ..wrappers import unwrap

METHOD_STATE_FILE = "method_state.pt"
"""Name of the method-state file (``Method.state_dict()``) in checkpoints and run folders."""


class Backward:
    """The injected backward pass, and with it the way to skip DDP's gradient all-reduce.

    ``backward(loss)`` runs the trainer's backward (``accelerator.backward`` with gradient-accumulation
    scaling); ``with backward.no_sync(): ...`` runs inner passes whose parameter gradients must not be
    all-reduced yet (FreeLB's first K-1 passes). Both travel together because they belong to the same
    model wrapper; a plain callable is accepted everywhere (:meth:`of`) and then never skips a sync.
    """

    def __init__(
        self,
        fn: Callable[[torch.Tensor], None],
        no_sync: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
    ) -> None:
        self.fn, self.no_sync = fn, no_sync

    def __call__(self, loss: torch.Tensor) -> None:
        self.fn(loss)

    @classmethod
    def of(cls, backward: Callable[[torch.Tensor], None]) -> Backward:
        """``backward`` itself when it is a :class:`Backward`, else a wrapper without ``no_sync``."""
        return backward if isinstance(backward, Backward) else cls(backward)


class StepOutput(NamedTuple):
    """What one training step returns: the loss to report and scalar diagnostics to log."""

    loss: torch.Tensor
    metrics: dict[str, float]


@dataclass
class MethodConfig:
    """Base of every method's hyper-parameters (flat dataclass: fields become CLI flags).

    Subclasses add ``adv_*`` fields with ``metadata={"help": ...}`` and the paper's default, and
    extend :meth:`validate`. Invalid values raise :class:`advtune.errors.UsageError` naming the field.
    """

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:  # pragma: no cover - overridden
        pass

    # helpers for validate()
    def _check(self, ok: bool, name: str, why: str) -> None:
        if not ok:
            raise UsageError(f"invalid {name}={getattr(self, name)!r}: {why}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def cfg_field(default: Any, help: str, **kwargs: Any) -> Any:  # noqa: A002 - mirrors dataclasses
    """``dataclasses.field`` with a help string (shown by ``advtune train --help``)."""
    return field(default=default, metadata={"help": help, **kwargs.pop("metadata", {})}, **kwargs)


@dataclass
class DropoutReplayConfig(MethodConfig):
    """Mixin of the methods that can give every forward pass of a step the first pass's dropout masks
    (FreeLB section 3.3; FGM, PGD, FreeLB, YOPO, VAT, SMART, TAT, R3F), see :mod:`advtune.dropout_replay`."""

    adv_reuse_dropout: bool = cfg_field(False, "reuse the first forward pass's dropout masks in every pass of a step")


MEMORY_MODES = ("joint", "sequential")
"""How a single-backward method backpropagates its loss L(c, a) of clean and perturbed outputs
(:mod:`advtune.methods.paired`)."""


@dataclass
class AdvMemoryConfig(MethodConfig):
    """Mixin of the single-backward methods (VAT, SMART, TAT, R3F, R4F, CAT, ROSE, PEAFT), whose loss L(c, a)
    combines clean outputs c = f(x) and perturbed outputs a = f(x + δ): the same gradient at two memory costs,
    see :mod:`advtune.methods.paired`."""

    adv_memory: str = cfg_field(
        "joint",
        "joint: one backward through the clean and the perturbed graph (both alive, ~1.7x standard's memory); "
        "sequential: the same gradient one graph at a time (~1.1-1.2x; the perturbed pass once more without "
        "autograd with the same dropout masks, 10-35 percent more time; docs/benchmarks.md).",
    )

    def validate(self) -> None:
        super().validate()
        self._check(self.adv_memory in MEMORY_MODES, "adv_memory", f"choose from {', '.join(MEMORY_MODES)}")


RADIUS_UNITS = ("absolute", "relative")


@dataclass
class RadiusConfig(MethodConfig):
    """Base of every method that perturbs the embeddings: the unit its radii and step sizes are given in.

    The papers tune ε, step sizes and noise scales on BERT, whose word embeddings are about three times
    smaller than a Llama-family model's (mean row L2 norm 1.07 for MiniLM, 3.20 for SmolLM2-135M), so the
    same absolute ε is a much weaker attack on the larger embeddings. ``relative`` reads every field in
    :attr:`radius_fields` in units of the model's own embedding scale, measured once from the embedding
    matrix when the method is set up: the mean row L2 norm for ``l2`` perturbations (one token's
    embedding), the mean absolute entry for everything else (L∞ radii, per-entry noise σ). Default
    ``absolute``: the papers' presets keep their meaning.
    """

    radius_fields: ClassVar[tuple[str, ...]] = ("adv_epsilon", "adv_step_size", "adv_init_scale", "adv_prompt_epsilon")

    adv_radius_unit: str = cfg_field(
        "absolute",
        "absolute, or relative: every radius, step size and noise scale in units of the model's embedding scale "
        "(mean row L2 norm for l2, mean |entry| otherwise), measured at setup.",
    )

    def validate(self) -> None:
        super().validate()
        self._check(self.adv_radius_unit in RADIUS_UNITS, "adv_radius_unit", f"choose from {', '.join(RADIUS_UNITS)}")

    def radius_scale_key(self) -> str:
        """``l2`` (the mean row norm is the unit) for L2 perturbations, else ``linf`` (the mean |entry|)."""
        return "l2" if getattr(self, "adv_norm", "linf") == "l2" else "linf"


def embedding_scale(model: torch.nn.Module) -> dict[str, float]:
    """Scale of the word embeddings: ``l2`` = mean row L2 norm, ``linf`` = mean absolute entry."""
    from ..embeddings import input_embedding_module

    with torch.no_grad():
        weight = input_embedding_module(model).weight.detach().float()
        return {"l2": float(weight.norm(dim=-1).mean()), "linf": float(weight.abs().mean())}


def _measures_radii(setup: Callable[..., torch.nn.Module]) -> Callable[..., torch.nn.Module]:
    @functools.wraps(setup)
    def wrapper(self: Method, model: torch.nn.Module, *args: Any, **kwargs: Any) -> torch.nn.Module:
        self.apply_radius_unit(model)
        return setup(self, model, *args, **kwargs)

    wrapper._measures_radii = True  # type: ignore[attr-defined]
    return wrapper


class Method:
    """A training method. Subclasses set ``name``, ``config_class`` and ``paper``.

    Every ``setup`` (a subclass's own too: :meth:`__init_subclass__` wraps it) first calls
    :meth:`apply_radius_unit`, so no method can forget to convert relative radii.
    """

    name: ClassVar[str] = ""
    config_class: ClassVar[type[MethodConfig]] = MethodConfig
    paper: ClassVar[dict[str, str]] = {}
    adds_prompt: ClassVar[bool] = False
    """The method's ``setup`` puts soft-prompt tokens before the text (PEAFT): the model is then fed
    embeddings, and the pipeline pads a decoder's batches on the left (see ``pipeline.prepare``)."""

    def __init__(self, config: MethodConfig | None = None, **overrides: Any) -> None:
        if config is None:
            config = self.config_class(**overrides)
        elif overrides:
            config = dataclasses.replace(config, **overrides)
        if not isinstance(config, self.config_class):
            raise UsageError(
                f"method '{self.name}' expects a {self.config_class.__name__}, got {type(config).__name__}"
            )
        self.config = config
        self.given_config = config
        self.embedding_scale: dict[str, float] | None = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        setup = cls.__dict__.get("setup")
        if setup is not None and not getattr(setup, "_measures_radii", False):
            cls.setup = _measures_radii(setup)

    def apply_radius_unit(self, model: torch.nn.Module) -> None:
        """Measure the model's embedding scale (:attr:`embedding_scale`, recorded in ``run_config.json``)
        and, for ``adv_radius_unit=relative``, make :attr:`config` the given config with every radius
        multiplied by it (:attr:`given_config` keeps the values as given; calling again never compounds)."""
        given = self.given_config
        if not isinstance(given, RadiusConfig):
            return
        scale = embedding_scale(model)
        factor = scale[given.radius_scale_key()] if given.adv_radius_unit == "relative" else 1.0
        self.embedding_scale = {**scale, "unit": given.adv_radius_unit, "factor": factor}
        changes = {
            name: getattr(given, name) * factor
            for name in given.radius_fields
            if isinstance(getattr(given, name, None), (int, float)) and not isinstance(getattr(given, name), bool)
        }
        self.config = dataclasses.replace(given, **changes) if factor != 1.0 else given

    # ------------------------------------------------------------------ protocol
    @property
    def replays(self) -> int:
        """Optimizer steps per mini-batch (FreeAT / YOPO replay each batch this many times)."""
        return int(getattr(self.config, "adv_replays", 1) or 1)

    def setup(self, model: torch.nn.Module, tokenizer: Any = None, task: Any = None) -> torch.nn.Module:
        """Adapt the model before training (add heads, freeze parts, wrap with PEFT). Default: none.

        ``tokenizer`` and ``task`` (an :class:`advtune.tasks.Task`) are what a method may need besides the
        model, e.g. a synonym-aware method builds its vocabulary neighbourhoods from the tokenizer; both are
        ``None`` when the caller has none (unit tests, benchmarks on a bare model).
        """
        self.apply_radius_unit(model)
        return model

    def compute_loss(self, model: torch.nn.Module, inputs: dict[str, torch.Tensor]) -> StepOutput:
        raise NotImplementedError(f"{type(self).__name__} must implement compute_loss() or step()")

    def step(self, model: torch.nn.Module, inputs: dict[str, torch.Tensor], backward: Backward) -> StepOutput:
        """Forward and backward passes of one training step; never calls the optimizer.

        ``backward`` is a :class:`Backward` or any callable that backpropagates a loss.
        """
        out = self.compute_loss(model, inputs)
        backward(out.loss)
        return StepOutput(out.loss.detach(), out.metrics)

    def on_epoch_end(self, epoch: int) -> dict[str, float]:
        """Called by the trainer at each epoch boundary (TAT refreshes its error tally here)."""
        return {}

    def inference_model(self, model: torch.nn.Module) -> torch.nn.Module:
        """The model used for evaluation and saving (methods may strip training-only parts)."""
        return model

    def save_inference_model(self, model: torch.nn.Module, tokenizer: Any, out_dir: Any) -> None:
        """Write the inference model into the run folder (safetensors) with its tokenizer; a PEFT model
        writes its adapter and head only (:func:`advtune.adapters.save_adapter`)."""
        from .. import adapters

        if adapters.is_adapter_model(model):
            adapters.save_adapter(model, tokenizer, out_dir)
            return
        model.save_pretrained(out_dir, safe_serialization=True)
        tokenizer.save_pretrained(out_dir)

    @classmethod
    def load_inference_model(cls, run_dir: Any, run_config: dict[str, Any]) -> tuple[torch.nn.Module, Any]:
        """Load what :meth:`save_inference_model` wrote: ``(model, tokenizer)``."""
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        from .. import adapters

        if adapters.has_adapter(run_dir):
            return adapters.load_adapter(run_dir, run_config)
        return AutoModelForSequenceClassification.from_pretrained(run_dir), AutoTokenizer.from_pretrained(run_dir)

    def state_dict(self) -> dict[str, Any]:
        """Method state saved with checkpoints (persistent δ, error tallies, EMA teachers, ...)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


# ---------------------------------------------------------------------------------- shared losses


def model_inputs(inputs: dict[str, Any]) -> dict[str, Any]:
    """The batch without ``labels`` (methods compute their own losses from logits)."""
    return {k: v for k, v in inputs.items() if k != "labels"}


def is_regression(model: torch.nn.Module) -> bool:
    config = getattr(unwrap(model), "config", None)
    return getattr(config, "problem_type", None) == "regression" or getattr(config, "num_labels", 2) == 1


def task_loss(logits: torch.Tensor, labels: torch.Tensor, regression: bool, reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy for classification, MSE for regression (as the HF heads compute it), in fp32."""
    if regression:
        return F.mse_loss(logits.squeeze(-1).float(), labels.float(), reduction=reduction)
    return F.cross_entropy(logits.float(), labels.long(), reduction=reduction)


def symmetric_kl(p_logits: torch.Tensor, q_logits: torch.Tensor, regression: bool = False) -> torch.Tensor:
    """KL(p||q) + KL(q||p) averaged over the batch (squared error for regression), in fp32."""
    if regression:
        return F.mse_loss(p_logits.float(), q_logits.float())
    p_log = F.log_softmax(p_logits.float(), dim=-1)
    q_log = F.log_softmax(q_logits.float(), dim=-1)
    kl_pq = F.kl_div(q_log, p_log, log_target=True, reduction="batchmean")  # KL(p || q)
    kl_qp = F.kl_div(p_log, q_log, log_target=True, reduction="batchmean")  # KL(q || p)
    return kl_pq + kl_qp
