"""Benchmark suites: which (task x method x seed) grid to run, with one shared training budget.

A suite is data, not code: the runner (:mod:`advtune.bench.runner`) turns it into grid cells and
trains each cell through :func:`advtune.pipeline.train`, so every suite, from the 10-minute CPU
``demo`` to the ``paper`` settings for a GPU machine, runs the same code path. Every subset a suite
uses is declared here (``TaskSpec.note``) and copied into each run's ``cell.json`` and into the
report, so no table hides that it was computed on a subset.

``methods=ALL`` means "every registered method at run time": suites grow as methods land, and a
method that a suite names but that is not registered is skipped with a note.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from ..errors import UsageError

ALL = ("*",)
"""Placeholder for "every method in :data:`advtune.methods.METHODS`", resolved when the grid is built."""


@dataclass(frozen=True)
class TaskSpec:
    """One task of a suite with the data budget it is trained on.

    Args:
        task (`str`): task name for :func:`advtune.tasks.get_task`.
        label (`str`): folder name of the task in the results tree (``sst2-2k``, ``banking77-half``).
        args (`dict`): :class:`~advtune.config.TaskArguments` / training arguments specific to this task
            (``max_train_samples``, ``train_fraction_per_label``, ``max_eval_samples``, ``num_train_epochs``...).
        note (`str`): the subset, in words, for the report ("1,000 of 67,349 train examples").
        transfer (`tuple[str, ...]`): tasks with the same label space the trained run is also evaluated
            on, zero-shot (``advtune eval --run R --task T``): SST-2 -> the four review domains.
        transfer_samples (`int | None`): evaluate each transfer task on a seeded random sample of this
            many examples (the same examples for every run); ``None`` = the whole evaluation split.
        model (`str | None`): the backbone of this task's cells (default: the suite's). A suite comparing
            backbones lists the task once per backbone, under its own label, so every ratio and every
            difference in the report is taken against ``standard`` on the *same* backbone.
        method_training (`dict[str, dict]`): a method's training arguments on this task only (after the
            suite's ``method_training``): a learning rate that one backbone needs for one method.
    """

    task: str
    label: str
    args: dict[str, Any] = field(default_factory=dict)
    note: str = "full data"
    transfer: tuple[str, ...] = ()
    transfer_samples: int | None = None
    model: str | None = None
    method_training: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class Variant:
    """Extra runs of a method: a λ sweep (``overrides={"adv_lambda": 0.5}``) or an epoch sweep
    (``training={"num_train_epochs": 2}``); the report plots AUA against whichever value varies."""

    name: str
    overrides: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Suite:
    """A benchmark grid: tasks x methods x seeds (x variants), one training budget for all cells.

    Args:
        name (`str`): suite name (``advtune bench --suite NAME``).
        description (`str`): one line for ``--help`` and the report.
        tasks (`tuple[TaskSpec, ...]`): tasks and their data budgets.
        methods (`tuple[str, ...]`): method names; :data:`ALL` = every registered method.
        seeds (`tuple[int, ...]`): training seeds.
        training (`dict`): arguments passed to every :func:`advtune.pipeline.train` call.
        method_overrides (`dict[str, dict]`): per-method hyper-parameters (default: the paper's).
        method_training (`dict[str, dict]`): per-method training arguments, for a method whose
            trainable parameters need another learning rate (PEAFT trains a soft prompt and a head on a
            frozen encoder); stated in each run's ``cell.json`` and the report's run table.
        variants (`dict[str, tuple[Variant, ...]]`): extra runs per method (λ or epoch sweeps).
        attack (`dict | None`): word-substitution attack after training (``{"n": 200, "split": "dev"}``).
        model (`str`): model alias, local folder or hub id.
        kind (`str`): ``"grid"`` (train runs) or ``"overhead"`` (speed/memory measurement only).
    """

    name: str
    description: str
    tasks: tuple[TaskSpec, ...] = ()
    methods: tuple[str, ...] = ALL
    seeds: tuple[int, ...] = (1,)
    training: dict[str, Any] = field(default_factory=dict)
    method_overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    method_training: dict[str, dict[str, Any]] = field(default_factory=dict)
    variants: dict[str, tuple[Variant, ...]] = field(default_factory=dict)
    attack: dict[str, Any] | None = None
    model: str = "minilm"
    kind: str = "grid"

    def replace(self, **changes: Any) -> Suite:
        return dataclasses.replace(self, **changes)


# ------------------------------------------------------------------------------------------ suites
# CPU budgets are measured on 2 cores (MiniLM, batch 32): keep sequences short and subsets small.
_CPU_TRAINING = {
    "per_device_train_batch_size": 32,
    "per_device_eval_batch_size": 128,
    "learning_rate": 1e-4,
    "warmup_steps": 0.1,
    "save_strategy": "no",  # a killed cell is redone from scratch; checkpoints would only cost time
    "logging_steps": 10,
    "disable_tqdm": True,  # the runner shows one bar over the grid
}

DEMO = Suite(
    name="demo",
    description="README main job (<= 10 min on 2 CPU cores): methods on an SST-2 subset + word-substitution attack",
    tasks=(
        TaskSpec(
            "sst2",
            "sst2-2k",
            {"max_train_samples": 2000, "max_length": 64, "num_train_epochs": 1},
            "2,000 of 67,349 train examples (seeded), max length 64, 1 epoch; full dev set (872)",
        ),
    ),
    methods=("standard", "freelb", "cat"),
    seeds=(1,),
    # batch 16: twice the updates of batch 32 for the same compute (fewer steps under-train MiniLM)
    training={**_CPU_TRAINING, "per_device_train_batch_size": 16},
    attack={"n": 200},  # the first 200 dev examples, the same for every method (~25 s per run on 2 idle cores)
)

_GLUE_SMALL_TASKS = (
    TaskSpec(
        "rte",
        "rte",
        {"max_train_samples": 1000, "max_length": 128},
        "1,000 of 2,490 train examples, max length 128; full dev (277)",
    ),
    TaskSpec(
        "mrpc",
        "mrpc",
        {"max_train_samples": 1000, "max_length": 128},
        "1,000 of 3,668 train examples, max length 128; full dev (408)",
    ),
    TaskSpec(  # 1,000 examples x 2 epochs left every method at the majority class (MCC 0): all data, 1 epoch
        "cola",
        "cola",
        {"max_length": 64, "num_train_epochs": 1},
        "all 8,551 train examples, 1 epoch, max length 64; full dev (1,043)",
    ),
    TaskSpec(
        "stsb",
        "stsb",
        {"max_train_samples": 1000, "max_length": 128, "max_eval_samples": 500},
        "1,000 of 5,749 train examples, max length 128; first 500 of 1,500 dev examples",
    ),
    TaskSpec(
        "sst2",
        "sst2-2k",
        {"max_train_samples": 2000, "max_length": 64},
        "2,000 of 67,349 train examples, max length 64; full dev (872); zero-shot on 1,000 seeded reviews per domain",
        transfer=("books", "dvd", "electronics", "kitchen"),  # TAT section 3.3: out-of-domain transfer
        transfer_samples=1000,
    ),
)

GLUE_SMALL = Suite(
    name="glue-small",
    description="RTE, MRPC, CoLA, STS-B and an SST-2 subset x all methods x 3 seeds (CPU-sized subsets)",
    tasks=_GLUE_SMALL_TASKS,
    methods=ALL,
    seeds=(1, 2, 3),
    training={**_CPU_TRAINING, "num_train_epochs": 2, "eval_strategy": "epoch"},
    # SMART's reference code perturbs the embedding layer's output with unit-L-inf tokens (docs/methods/vat.md)
    variants={m: (Variant("mtdnn", {"adv_variant": "mtdnn"}),) for m in ("vat", "smart", "tat")},
)

_INTENT = (("banking77", "10,003"), ("clinc150", "15,000"), ("hwu64", "8,884"))
_INTENT_SPLITS = "test,test-difficult"  # the CAT paper's full and difficult test sets

INTENT = Suite(
    name="intent",
    description="BANKING77, CLINC150, HWU64: full and half training data (per label), full and difficult test sets",
    tasks=tuple(
        spec
        for task, n in _INTENT
        for spec in (
            TaskSpec(
                task,
                task,
                {"max_length": 64, "eval_splits": _INTENT_SPLITS},
                f"all {n} train examples, max length 64; full + difficult test",
            ),
            TaskSpec(
                task,
                f"{task}-half",
                {"max_length": 64, "train_fraction_per_label": 0.5, "eval_splits": _INTENT_SPLITS},
                f"half of each label of the {n} train examples (seeded), max length 64; full + difficult test",
            ),
        )
    ),
    methods=ALL,
    seeds=(1, 2, 3),
    training={**_CPU_TRAINING, "num_train_epochs": 5, "learning_rate": 4e-5, "eval_strategy": "epoch"},
    variants={"cat": (Variant("at", {"adv_lambda": 0.0}),)},  # CAT Tables 4-5: "AT" (λ = 0) beside AT+CTR
)

_PAPER_TRAINING = {
    "per_device_train_batch_size": 32,
    "per_device_eval_batch_size": 128,
    "learning_rate": 2e-5,
    "warmup_steps": 0.1,
    "weight_decay": 0.01,
    "save_strategy": "epoch",
    "eval_strategy": "epoch",
    "logging_steps": 50,
    "disable_tqdm": True,
}

PAPER = Suite(
    name="paper",
    description="The papers' full settings (BERT-base, full GLUE/intent data, 5 seeds): for a GPU machine",
    tasks=(
        *(
            TaskSpec(t, t, {"max_length": 128, "num_train_epochs": 3}, "full data, max length 128, 3 epochs")
            for t in ("rte", "mrpc", "cola", "stsb", "sst2")
        ),
        *(
            TaskSpec(
                t,
                t,
                {"max_length": 128, "num_train_epochs": 5, "learning_rate": 4e-5, "eval_splits": _INTENT_SPLITS},
                "full data, max length 128, 5 epochs (CAT paper, Qi et al. 2021 settings)",
            )
            for t, _ in _INTENT
        ),
    ),
    methods=ALL,
    seeds=(1, 2, 3, 4, 5),
    training=_PAPER_TRAINING,
    attack={"n": 1000, "sample_seed": 0},  # a seeded sample: the intent test sets are sorted by label
    model="bert-base-uncased",
)

_SST2_2K = TaskSpec(
    "sst2",
    "sst2-2k",
    {"max_train_samples": 2000, "max_length": 64},
    "2,000 of 67,349 train examples (seeded), max length 64; attack on the first 200 dev examples",
)
PEAFT_TRAINING = {"learning_rate": 3e-3}
"""PEAFT trains only the soft prompt and the head on a frozen encoder, which needs a far larger learning
rate than full fine-tuning (the paper gives none; prompt tuning commonly uses 1e-3 .. 3e-1)."""
PEAFT_MINILM = {"adv_pooling": "mean"}
"""The packaged MiniLM is a mean-pooling sentence encoder: read through the first *virtual* token (peft's
default) its frozen states barely vary between sentences, and PEAFT stayed at chance on SST-2 for 5
epochs at lr 3e-3 (also at 1e-3 and 1e-2). With the head on the mean of the text's final states it
learns (docs/methods/peaft.md)."""

_PEAFT_CPU_TRAINING = {**_CPU_TRAINING, "per_device_train_batch_size": 16, "num_train_epochs": 2}

PEAFT_TABLE1 = Suite(
    name="peaft-table1",
    description="PEAFT Table 1 on CPU: ACC / AUA / AVG of standard, FreeLB, ROSE and PEAFT on an SST-2 subset",
    tasks=(_SST2_2K,),
    methods=("standard", "freelb", "rose", "peaft"),
    seeds=(1,),
    training=_PEAFT_CPU_TRAINING,
    method_overrides={"peaft": PEAFT_MINILM},
    method_training={"peaft": PEAFT_TRAINING},
    attack={"n": 200},
)

PEAFT_FIG2 = Suite(
    name="peaft-fig2",
    description="PEAFT Figure 2: ACC/AUA vs λ (PEAFT) and AUA vs epochs (PEAFT, FreeLB, ROSE) on SST-2",
    tasks=(_SST2_2K,),
    methods=("standard", "peaft", "freelb", "rose"),
    seeds=(1,),
    # the budget of peaft-table1, so both suites can share a results folder (finished cells are reused)
    training=_PEAFT_CPU_TRAINING,
    method_overrides={"peaft": PEAFT_MINILM},
    method_training={"peaft": PEAFT_TRAINING},
    variants={
        "peaft": (
            *(Variant(f"lam{lam:g}", {"adv_lambda": lam}) for lam in (0.0, 0.25, 0.5, 0.75)),  # 1.0 = the default
            *(Variant(f"e{e}", training={"num_train_epochs": e}) for e in (1, 2, 4, 5)),
        ),
        **{
            m: tuple(Variant(f"e{e}", training={"num_train_epochs": e}) for e in (1, 2, 4, 5))
            for m in ("freelb", "rose")
        },
    },
    attack={"n": 200},
)

# ---------------------------------------------------------------- issue 17: where each mechanism can act
# Radii in relative units (``adv_radius_unit: relative``, docs/adapters.md): L-inf radii and per-entry noise
# are multiples of MiniLM's mean |embedding entry| (0.0434), FreeLB's L2 radius of its mean row norm (1.066).
SWEEP_RADII = (1e-3, 1e-2, 0.1, 0.3, 1.0)
"""VAT/TAT grid of relative σ = ε above the papers' point, which is the plain ``vat``/``tat`` cell (absolute
1e-5 = relative 2.3e-4 on MiniLM); 1.0 is a δ whose every entry is as large as an average embedding entry."""
FREELB_SWEEP_RADII = (0.5, 1.0, 2.0)
"""FreeLB's relative L2 ε above the paper's point, the plain ``freelb`` cell (0.15 = relative 0.1408 on
MiniLM); 2.0 is a δ twice as long as an average token embedding."""
CPU_ENCODER_RADIUS = 0.1
"""Relative σ = ε of the "cpu-encoder" preset (the ``cpu`` variant of ``tat-manyclass``), chosen from the
``radius-sweep`` suite (docs/results.md). On SST-2, VAT's δ at relative 0.01 moved the logits by a
median |Δlogit| of 0.042 (3.1% of a batch's labels flipped: one example of 32), at 0.1 by 0.19 (20%
flipped, 0.6 points of clean accuracy lost), at the papers' point (2.3e-4) by 0.001 (none). 0.01 was
tried first on BANKING77 and was too weak there: the model is flatter after ~90 steps on 77 classes,
|Δlogit| stayed at 0.003, no label flipped, and VAT and TAT differed in 9 of 3,080 test predictions
(VAT and standard in 332): the comparison could not show TAT's mechanism. 0.1 is the smallest swept
radius at which δ changes predictions on both kinds of task."""


def smoothness_radius(r: float, step_ratio: float) -> dict[str, Any]:
    """A VAT/SMART/TAT preset at relative radius ``r`` (σ = ε = r), keeping the paper's η/ε ratio
    (VAT/SMART: 1e-3 / 1e-5 = 100; TAT: 1e-4 / 1e-5 = 10), so only the size of δ changes."""
    return {"adv_radius_unit": "relative", "adv_init_scale": r, "adv_epsilon": r, "adv_step_size": r * step_ratio}


_STEP_RATIO = {"vat": 100.0, "smart": 100.0, "tat": 10.0}
_DIAG = {"adv_diagnostics_every": 5}  # 5: twice the diag points of the default, one no-grad forward each

RADIUS_SWEEP = Suite(
    name="radius-sweep",
    description="VAT and TAT (FreeLB for comparison) on an SST-2 subset over relative radii: relative σ = ε in "
    f"2.3e-4 (the papers' 1e-5 on MiniLM: the plain cells), {', '.join(f'{r:g}' for r in SWEEP_RADII)}; FreeLB "
    f"relative L2 ε in 0.1408 (the paper's), {', '.join(f'{r:g}' for r in FREELB_SWEEP_RADII)}; diag/* say where δ "
    "starts to change predictions",
    tasks=(
        TaskSpec(
            "sst2",
            "sst2-2k-1ep",
            {"max_train_samples": 2000, "max_length": 64, "num_train_epochs": 1},
            "2,000 of 67,349 train examples (seeded), max length 64, 1 epoch; full dev (872); "
            "attack on the first 200 dev examples; zero-shot on 500 seeded reviews per domain",
            transfer=("books", "dvd", "electronics", "kitchen"),
            transfer_samples=500,
        ),
    ),
    methods=("standard", "vat", "tat", "freelb"),
    seeds=(1,),
    training={**_CPU_TRAINING, "per_device_train_batch_size": 16},  # the demo's budget: 125 steps
    method_overrides={"vat": _DIAG, "tat": _DIAG},
    variants={
        **{
            m: tuple(Variant(f"rel{r:g}", smoothness_radius(r, _STEP_RATIO[m])) for r in SWEEP_RADII)
            for m in ("vat", "tat")
        },
        "freelb": tuple(
            Variant(
                f"rel{r:g}",
                {"adv_radius_unit": "relative", "adv_epsilon": r, "adv_init_scale": r, "adv_step_size": r / 5},
            )
            for r in FREELB_SWEEP_RADII
        ),
    },
    attack={"n": 200},
)

# ------------------------------------------------------- issue 16: adapters and a decoder, side by side
LORA_LEARNING_RATE = 5e-4
"""LoRA trains rank-8 updates and a new head: full fine-tuning's 1e-4 barely moves them in 125 steps; LoRA
is commonly trained at 1e-4 .. 1e-3 (Hu et al. 2021 used 2e-4 .. 5e-4 on GLUE)."""


PEAFT_SMOLLM2_LEARNING_RATE = 3e-4
"""PEAFT's prompt and head on the frozen SmolLM2. The head reads the mean of SmolLM2's final states: L1 norm
376 on SST-2 phrases (MiniLM's: 81), two outlier dimensions at mean |entry| 23 and 17, so one Adam step of lr
size on every head weight moves a logit by up to lr x 376: at MiniLM's 3e-3 the clean loss rose (0.95 -> 1.12
between steps 10 and 20), at 1e-3 too (0.79 -> 1.21). At 3e-4 it stayed near chance (0.68-0.82) and the run
ended at 49.5% dev accuracy: PEAFT's pooled head does not learn on this decoder at this budget
(docs/results.md)."""


def _sst2_backbone(
    label: str, model: str, note: str, method_training: dict[str, dict[str, Any]] | None = None, **adapter: Any
) -> TaskSpec:
    return TaskSpec(
        "sst2",
        label,
        {"max_train_samples": 2000, "max_length": 64, "num_train_epochs": 1, **adapter},
        "2,000 of 67,349 train examples (seeded), max length 64, 1 epoch, batch 16 (the demo's budget); "
        f"full dev (872); attack on the first 200 dev examples; {note}",
        model=model,
        method_training=method_training or {},
    )


ADAPTERS = Suite(
    name="adapters",
    description="SST-2 with MiniLM full fine-tuning, MiniLM + LoRA and SmolLM2-135M (dequantised Q4_1 GGUF) + LoRA: "
    "standard, FreeLB, TAT, CAT and PEAFT's prompt defence at the papers' radii; attack on 200 dev examples",
    tasks=(
        _sst2_backbone("sst2-2k-minilm", "minilm", "MiniLM-L6, all weights, lr 1e-4"),
        _sst2_backbone(
            "sst2-2k-minilm-lora",
            "minilm",
            f"MiniLM-L6 + LoRA r=8 (peft defaults), lr {LORA_LEARNING_RATE:g}",
            peft="lora",
            learning_rate=LORA_LEARNING_RATE,
        ),
        _sst2_backbone(
            "sst2-2k-smollm2-lora",
            "smollm2-135m",
            f"SmolLM2-135M-Instruct dequantised from Q4_1 + LoRA r=8 (peft defaults), lr {LORA_LEARNING_RATE:g}; "
            f"PEAFT lr {PEAFT_SMOLLM2_LEARNING_RATE:g}",
            method_training={"peaft": {"learning_rate": PEAFT_SMOLLM2_LEARNING_RATE}},
            peft="lora",
            learning_rate=LORA_LEARNING_RATE,
        ),
    ),
    methods=("standard", "freelb", "tat", "cat", "peaft"),
    seeds=(1,),
    training={**_CPU_TRAINING, "per_device_train_batch_size": 16},
    # PEAFT's own defence prompt on the frozen backbone (no LoRA), the head on the mean of the text's states
    method_overrides={"peaft": PEAFT_MINILM},
    method_training={"peaft": {**PEAFT_TRAINING, "peft": None}},
    attack={"n": 200},
)

MANYCLASS_BUDGET_NOTE = (
    "one core, standard at batch 32 x length 32: 1.1 s CPU per step (BANKING77, 300 steps: 370 s CPU in all); "
    "VAT and TAT cost about 3 standard steps: a cell of ~90 steps (1 epoch of ~2,900 examples) is ~6 CPU-minutes "
    "with the test evaluation and the attack"
)
"""The calibration behind the intent tasks' subsets. The first design (~6,000 examples, a <= 15 min SMART
cell) was halved so that the 18 cells of two tasks x three seeds x standard/VAT/TAT fit in one working
session of two cores; lr 2e-4 instead of 1e-4 for the fewer steps (the CAT BANKING77 run at 1,600
examples, 1 epoch, lr 2e-4 reached 35% test accuracy, docs/results.md)."""

_MANYCLASS_TASKS = (
    *(
        TaskSpec(
            task,
            f"{task}-len32",
            {"max_length": 32, "train_fraction_per_label": fraction, "num_train_epochs": 1, "eval_splits": "test"},
            f"{fraction:g} of each label of the {n} train examples (seeded, about {kept}), 1 epoch, max length 32, "
            f"lr 2e-4; full test ({test}); budget: {MANYCLASS_BUDGET_NOTE}",
        )
        for task, fraction, n, kept, test in (
            ("banking77", 0.3, "10,003", "3,000", "3,080"),
            ("hwu64", 0.33, "8,884", "2,900", "1,076"),
            ("clinc150", 0.2, "15,000", "3,000", "4,500 in-scope"),
        )
    ),
    TaskSpec(
        "stsb",
        "stsb-1k",
        {"max_train_samples": 1000, "max_length": 64, "max_eval_samples": 500, "num_train_epochs": 2},
        "1,000 of 5,749 train examples, 2 epochs (63 steps), max length 64; first 500 of 1,500 dev; TAT: 10 bins",
    ),
)

TAT_MANYCLASS = Suite(
    name="tat-manyclass",
    description="TAT vs VAT, SMART and standard where TAT's target can differ from 'the other label': BANKING77, "
    "HWU64, CLINC150 (max length 32) and STS-B (TAT's 10 regression bins), 3 seeds, at the papers' settings and "
    f"at the cpu-encoder preset (variant 'cpu': relative σ = ε = {CPU_ENCODER_RADIUS:g}, chosen by radius-sweep)",
    tasks=_MANYCLASS_TASKS,
    methods=("standard", "vat", "smart", "tat"),
    seeds=(1, 2, 3),
    training={**_CPU_TRAINING, "learning_rate": 2e-4},
    method_overrides={"vat": _DIAG, "smart": _DIAG, "tat": {**_DIAG, "adv_regression_bins": 10}},
    variants={
        m: (Variant("cpu", smoothness_radius(CPU_ENCODER_RADIUS, _STEP_RATIO[m])),) for m in ("vat", "smart", "tat")
    },
    attack={"n": 200, "sample_seed": 0},  # a seeded sample of the test set, which is sorted by label
)

OVERHEAD = Suite(
    name="overhead",
    description="step time and peak memory of every method relative to standard fine-tuning",
    methods=ALL,
    training={"batch_size": 32, "seq_len": 128, "warmup": 2, "steps": 5},  # FreeLB's batch 32 x length 128
    kind="overhead",
)

SUITES: dict[str, Suite] = {
    s.name: s
    for s in (
        DEMO,
        GLUE_SMALL,
        INTENT,
        PAPER,
        PEAFT_TABLE1,
        PEAFT_FIG2,
        ADAPTERS,
        RADIUS_SWEEP,
        TAT_MANYCLASS,
        OVERHEAD,
    )
}


def get_suite(name: str) -> Suite:
    try:
        return SUITES[name]
    except KeyError:
        raise UsageError(f"unknown suite '{name}' (choose from: {', '.join(SUITES)})") from None
