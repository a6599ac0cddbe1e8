"""PEAFT: parameter-efficient adversarial fine-tuning with a defense soft prompt.

Paper: "Robust Tuning of Pre-trained Language Models: a Parameter-efficient Approach" (anonymous ACL
submission, section 3). The encoder is frozen; ``k`` virtual tokens (the *defense* soft prompt,
peft ``PromptTuningConfig(task_type="SEQ_CLS")``) and the classification head train on
``L_bgn + λ·L_adv``. The inner maximisation perturbs the input word embeddings with δ (mask M =
real tokens; δ0 = U(-1,1)·M·ε_init/sqrt(q·d), q = real tokens of the example) and an *attack* soft
prompt of ``k_a`` virtual tokens, both moved by K sign-gradient steps on ``L_adv``.

Choices where the paper is silent (documented in docs/methods/peaft.md):
* the paper's step ``δ_k = ε·sign(∇_E L_adv)`` is L∞ PGD with step 2ε and radius ε (the default
  ``adv_step_size=None``); any other step size gives ordinary L∞ PGD inside the ε-ball;
* the attack prompt is persistent method state (a universal adversarial prompt, like FreeAT's δ),
  initialised from random vocabulary embeddings and kept in an L∞ ball of ``adv_prompt_epsilon``
  around that start; it is inserted between the defense prompt and the text for the adversarial
  forwards only and is never part of the inference model;
* the head is trained (a new task needs one): peft's ``classifier``/``score`` plus BERT-style
  ``pooler`` (RoBERTa's ``classifier`` already contains its dense layer);
* no hyper-parameter table: defaults k=20, k_a=5, K=3, ε=1e-3, ε_init=0.6, λ=1 are ours. Measured on
  MiniLM (SST-2, manual loop, 40 steps of 16): at ε = 0.01 the frozen encoder cannot be made robust,
  and prompt + head collapse to a constant prediction (clean loss ln 2, logit spread 0.01-0.08); at
  1e-3 it learns (clean loss 0.60, λ = 0 reaches 0.51);
* ``adv_pooling``: the head reads the first position, which under prompt tuning is the first
  *virtual* token (``"first"``, peft's behaviour and the default), or the mean final state of the
  text's positions (``"mean"``: after the defense prompt and, in the adversarial forwards, after the
  attack prompt, which then acts through attention only, as it does on the first position). A
  departure for encoders trained for mean pooling, such as the packaged MiniLM sentence encoder:
  with ``"first"`` its frozen states barely vary between sentences there and PEAFT stayed at chance
  on SST-2 (docs/methods/peaft.md); the CPU suites use ``"mean"``.
Cost per step: 1 clean + K inner + 1 adversarial forward, K inner (δ/prompt only) + 1 full backward.
``adv_memory=sequential`` backpropagates L_bgn and λ·L_adv one after the other (one graph alive at a time)
at no extra pass: the loss has no term of both passes (:mod:`advtune.methods.paired`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

from ..embeddings import input_embedding_module, word_embeddings
from ..errors import UsageError
from ..perturbation import ascent_step, init_delta, masked_norm, project
from .base import (
    AdvMemoryConfig,
    RadiusConfig,
    StepOutput,
    cfg_field,
    model_inputs,
    task_loss,
)
from .paired import Pair, PairedMethod, PairFrame

POOLINGS = ("first", "mean")
_POOL_HANDLES = "_advtune_pool_hooks"
_POOL_STATE = "_advtune_pool_state"


def install_mean_pooling(model: torch.nn.Module, skip: int) -> None:
    """Make the head of a prompt-tuned ``model`` read the mean final state of the real positions after
    the first ``skip`` (the defense prompt) instead of position 0.

    Two hooks: one on the wrapped transformer records the (prompt-extended) attention mask of each
    forward; one on the head's sequence input (``pooler`` for BERT/DeBERTa, else ``classifier`` for
    RoBERTa/ELECTRA, else ``score`` for decoders: Llama, Qwen2, Mistral...) puts the masked mean at
    *every* position, so the head reads it wherever it pools: position 0 for encoders; for a decoder the
    position ``transformers`` picks, which under a prompt adapter (inputs given as embeddings, no
    ``input_ids`` to find the last real token in) is simply the last one, a padding position for the
    shorter rows of a right-padded batch. Idempotent.
    """
    if getattr(model, _POOL_HANDLES, None):
        return
    base = model.get_base_model()
    head = next((m for n, m in base.named_modules() if n.split(".")[-1] == "pooler"), None)
    for name in ("classifier", "score"):
        head = head if head is not None else getattr(base, name, None)
    if head is None:
        raise UsageError(f"{type(base).__name__}: no pooler/classifier/score module to apply adv_pooling=mean to")
    state: dict[str, Any] = {"mask": None, "skip": skip}

    def record(module, args, kwargs):
        state["mask"] = kwargs.get("attention_mask")

    def pool(module, args):
        hidden = args[0]
        if not isinstance(hidden, torch.Tensor) or hidden.dim() != 3:
            raise UsageError(f"adv_pooling=mean: {type(module).__name__} does not read a token sequence")
        mask = state["mask"]
        m = torch.ones(hidden.shape[:2], device=hidden.device) if mask is None else mask.to(hidden.device).float()
        k = state["skip"]
        m = torch.cat([torch.zeros_like(m[:, :k]), m[:, k:]], dim=1).to(hidden.dtype)
        mean = (hidden * m.unsqueeze(-1)).sum(1) / m.sum(1, keepdim=True).clamp_min(1)
        return (mean.unsqueeze(1).expand_as(hidden), *args[1:])

    handles = [base.register_forward_pre_hook(record, with_kwargs=True), head.register_forward_pre_hook(pool)]
    setattr(model, _POOL_HANDLES, handles)
    setattr(model, _POOL_STATE, state)


@contextlib.contextmanager
def pool_skipping(model: torch.nn.Module, extra: int) -> Iterator[None]:
    """Inside the block, mean pooling also skips the ``extra`` positions after the defense prompt (the
    attack prompt of the adversarial forwards); a no-op without mean pooling."""
    state = getattr(model, _POOL_STATE, None)
    if state is None or not extra:
        yield
        return
    base = state["skip"]
    state["skip"] = base + extra
    try:
        yield
    finally:
        state["skip"] = base


@dataclass
class PEAFTConfig(AdvMemoryConfig, RadiusConfig):
    adv_num_virtual_tokens: int = cfg_field(20, "k: defense soft-prompt tokens (trained, kept for inference).")
    adv_attack_tokens: int = cfg_field(5, "k_a: attack soft-prompt tokens (inner maximisation only; 0 = none).")
    adv_steps: int = cfg_field(3, "K: sign-gradient ascent steps of the inner maximisation.")
    adv_epsilon: float = cfg_field(1e-3, "ε: L∞ radius of δ (per embedding entry).")
    adv_step_size: float | None = cfg_field(None, "Ascent step; None = 2ε, i.e. the paper's δ_k = ε·sign(∇).")
    adv_init_scale: float = cfg_field(0.6, "ε_init of δ0 = U(-1,1)·M·ε_init/sqrt(q·d).")
    adv_lambda: float = cfg_field(1.0, "λ of L_total = L_bgn + λ·L_adv (0 = plain prompt tuning).")
    adv_prompt_epsilon: float = cfg_field(0.05, "L∞ radius of the attack prompt around its initialisation.")
    adv_train_pooler: bool = cfg_field(True, "Also train the model's `pooler` (BERT-style heads) with the classifier.")
    adv_memory: str = cfg_field(
        "sequential",
        "sequential (default here: free, the loss has no term of both passes): backpropagate L_bgn, then "
        "lambda*L_adv, one graph at a time (0.79x standard's memory against 1.40x); joint: one backward of both.",
    )
    adv_pooling: str = cfg_field(
        "first",
        "What the head reads: first (the first position = first virtual token, peft's default) or mean "
        "(mean final state of the positions after the defense prompt; for mean-pooling encoders like MiniLM).",
    )

    def validate(self) -> None:
        super().validate()
        self._check(self.adv_num_virtual_tokens > 0, "adv_num_virtual_tokens", "must be positive")
        self._check(self.adv_attack_tokens >= 0, "adv_attack_tokens", "must be >= 0")
        self._check(self.adv_steps >= 1, "adv_steps", "must be >= 1")
        self._check(self.adv_epsilon > 0, "adv_epsilon", "must be positive")
        self._check(self.adv_step_size is None or self.adv_step_size > 0, "adv_step_size", "must be positive")
        self._check(self.adv_init_scale >= 0, "adv_init_scale", "must be >= 0")
        self._check(self.adv_lambda >= 0, "adv_lambda", "must be >= 0")
        self._check(self.adv_prompt_epsilon >= 0, "adv_prompt_epsilon", "must be >= 0")
        self._check(self.adv_pooling in POOLINGS, "adv_pooling", f"choose from {', '.join(POOLINGS)}")


class PEAFT(PairedMethod):
    name = "peaft"
    config_class = PEAFTConfig
    adds_prompt = True
    paper = {"title": "Robust Tuning of Pre-trained Language Models: a Parameter-efficient Approach", "arxiv": ""}

    def __init__(self, config: PEAFTConfig | None = None, **overrides: Any) -> None:
        super().__init__(config, **overrides)
        self.attack_prompt: torch.Tensor | None = None  # (k_a, d), persistent
        self.attack_prompt_init: torch.Tensor | None = None

    # ------------------------------------------------------------------ model surgery
    def setup(self, model: torch.nn.Module, tokenizer: Any = None, task: Any = None) -> torch.nn.Module:
        """Wrap the model with the defense prompt (through :func:`advtune.adapters.wrap`, the one way to add
        an adapter); a model that already carries an adapter (``--peft``) keeps it as the defense."""
        from .. import adapters

        c = self.config
        if not adapters.is_adapter_model(model):
            args = adapters.AdapterArguments(peft="prompt", peft_num_virtual_tokens=c.adv_num_virtual_tokens)
            model = adapters.wrap(model, args, train_pooler=c.adv_train_pooler)
        if c.adv_pooling == "mean":
            install_mean_pooling(model, _prompt_tokens(model))
        if c.adv_attack_tokens and self.attack_prompt is None:
            vocab = input_embedding_module(model).weight
            rows = torch.randint(0, vocab.shape[0], (c.adv_attack_tokens,))
            self.attack_prompt_init = vocab[rows].detach().float().clone()
            self.attack_prompt = self.attack_prompt_init.clone()
        return model

    # ------------------------------------------------------------------ the step
    def _adv_forward(self, model, inputs, delta: torch.Tensor, prompt: torch.Tensor | None):
        """Forward on [defense prompt (added by peft), attack prompt, E(x) + δ]."""
        embeds = word_embeddings(model, inputs["input_ids"])
        embeds = embeds + delta.to(embeds.dtype)
        kwargs = {k: v for k, v in model_inputs(inputs).items() if k != "input_ids"}
        if prompt is not None:
            b, k_a = embeds.shape[0], prompt.shape[0]
            embeds = torch.cat([prompt.to(embeds.dtype).unsqueeze(0).expand(b, -1, -1), embeds], dim=1)
            for key, fill in (("attention_mask", 1), ("token_type_ids", 0)):
                if kwargs.get(key) is not None:
                    pad = kwargs[key].new_full((b, k_a), fill)
                    kwargs[key] = torch.cat([pad, kwargs[key]], dim=1)
        with pool_skipping(model, 0 if prompt is None else prompt.shape[0]):
            return model(inputs_embeds=embeds, **kwargs).logits

    # ------------------------------------------------------------------ the paired frame (methods/paired.py)
    def coupled(self) -> bool:
        return False  # L_bgn(clean) + λ·L_adv(adversarial): no term of both passes

    def begin(self, frame: PairFrame) -> None:
        """The inner maximisation (K steps on δ and the attack prompt), before the clean pass so that no
        graph of it is alive meanwhile."""
        c, backward, inputs = self.config, frame.backward, frame.inputs
        labels, mask = frame.labels, inputs["attention_mask"]
        step_size = c.adv_step_size if c.adv_step_size is not None else 2 * c.adv_epsilon
        ref = word_embeddings(frame.model, inputs["input_ids"])
        delta = init_delta(ref, mask, "uniform", c.adv_init_scale, "l2")
        prompt = None if self.attack_prompt is None else self.attack_prompt.to(ref.device).clone()
        adv_losses = []
        with backward.no_sync():
            for _ in range(c.adv_steps):
                delta.requires_grad_()
                leaves = [delta] + ([prompt.requires_grad_()] if prompt is not None else [])
                loss = task_loss(self._adv_forward(frame.model, inputs, delta, prompt), labels, frame.regression)
                grads = torch.autograd.grad(loss, leaves)
                adv_losses.append(loss.item())
                delta = ascent_step(delta, grads[0], mask, step_size, c.adv_epsilon, "linf")
                if prompt is not None:
                    prompt = self._prompt_step(prompt, grads[1], step_size)
        if prompt is not None:
            self.attack_prompt = prompt.detach().to(self.attack_prompt.device)
        frame.state.update(delta=delta.detach(), prompt=prompt, adv_losses=adv_losses)

    def clean_pass(self, frame: PairFrame) -> torch.Tensor:
        return frame.model(**frame.batch).logits

    def perturbed_pass(self, frame: PairFrame) -> torch.Tensor:
        return self._adv_forward(frame.model, frame.inputs, frame.state["delta"], frame.state["prompt"])

    def pair_loss(self, frame: PairFrame, clean: torch.Tensor | None, adv: torch.Tensor | None) -> StepOutput:
        """``L_bgn + λ·L_adv``; a side is None in a part of the sequential step."""
        terms, metrics = [], {}
        if clean is not None:
            terms.append(task_loss(clean, frame.labels, frame.regression))
            metrics["adv/clean_loss"] = terms[-1].item()
        if adv is not None:
            adv_loss = task_loss(adv, frame.labels, frame.regression)
            terms.append(self.config.adv_lambda * adv_loss)
            metrics["adv/loss"] = adv_loss.item()
        return StepOutput(sum(terms[1:], terms[0]), metrics)

    def finish(self, frame: PairFrame, pair: Pair) -> StepOutput:
        st = frame.state
        metrics = {
            **pair.out.metrics,
            "adv/inner_loss_first": st["adv_losses"][0],
            "adv/delta_norm": masked_norm(st["delta"], frame.inputs["attention_mask"], "linf").mean().item(),
        }
        return StepOutput(pair.out.loss, metrics)

    @torch.no_grad()
    def _prompt_step(self, prompt: torch.Tensor, grad: torch.Tensor, step_size: float) -> torch.Tensor:
        init = self.attack_prompt_init.to(prompt.device)
        moved = prompt.detach().float() + step_size * torch.nan_to_num(grad.float()).sign()
        radius = self.config.adv_prompt_epsilon
        if radius == 0:  # a radius of 0 pins the prompt (project() would read 0 as unbounded)
            return init.clone()
        return init + project((moved - init).unsqueeze(0), None, radius, "linf")[0]

    # ------------------------------------------------------------------ inference, saving, state
    def inference_model(self, model: torch.nn.Module) -> torch.nn.Module:
        """The peft model (frozen encoder + defense prompt + head); the attack prompt is not in it."""
        return model

    @classmethod
    def load_inference_model(cls, run_dir, run_config: dict[str, Any]):
        """The base model + ``peft_adapter/`` (defense prompt or ``--peft`` adapter, and head), with the
        run's pooling; saving is the base class's adapter saving."""
        model, tokenizer = super().load_inference_model(run_dir, run_config)
        if run_config.get("method", {}).get("config", {}).get("adv_pooling") == "mean":
            install_mean_pooling(model, _prompt_tokens(model))
        return model, tokenizer

    def state_dict(self) -> dict[str, Any]:
        if self.attack_prompt is None:
            return {}
        return {"attack_prompt": self.attack_prompt.cpu(), "attack_prompt_init": self.attack_prompt_init.cpu()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("attack_prompt") is not None:
            self.attack_prompt = state["attack_prompt"].float()
            self.attack_prompt_init = state["attack_prompt_init"].float()


def _prompt_tokens(model: torch.nn.Module) -> int:
    """Virtual tokens a prompt adapter puts before the text (0 for LoRA / IA3; mean pooling cannot see
    through a prefix adapter, whose virtual tokens live in the attention cache, not in the sequence)."""
    from ..adapters import adapter_kind

    kind = adapter_kind(model)
    if kind == "prefix":
        raise UsageError("adv_pooling=mean does not work with a prefix adapter; use adv_pooling=first")
    return int(model.peft_config[model.active_adapter].num_virtual_tokens) if kind == "prompt" else 0


def trainable_parameters(model: torch.nn.Module) -> int:
    """Number of parameters that train (PEAFT: k·d + head)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


__all__ = ["PEAFT", "PEAFTConfig", "trainable_parameters"]
