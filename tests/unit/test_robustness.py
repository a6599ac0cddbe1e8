"""ΔL_max (FreeLB eq. 5): >= 0, exactly 0 at ε = 0, grows with ε; loss surface; both CLIs on a tiny run."""

from __future__ import annotations

import json
import statistics

import pytest
import torch

from advtune.attacks.embedding import max_loss_increase
from advtune.embeddings import hooks_left
from advtune.surface import filter_normalized_direction, loss_surface
from advtune.testing import tiny_model


@pytest.fixture
def trained(batch):
    """A tiny model fitted a little to the batch, so its loss is small and can grow under attack."""
    model = tiny_model(num_labels=2, dropout=0.0, seed=3)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(15):
        opt.zero_grad()
        model(**batch).loss.backward()
        opt.step()
    return model.eval()


def test_zero_at_zero_epsilon(trained, batch):
    delta, clean = max_loss_increase(trained, batch, c=0.0, steps=5)
    assert torch.equal(delta, torch.zeros_like(delta))
    assert (clean > 0).all()


def test_nonnegative_and_grows_with_epsilon(trained, batch):
    before = {k: v.clone() for k, v in trained.state_dict().items()}
    medians, per_c = [], []
    for c in (0.01, 0.1, 0.5, 2.0):
        delta, _ = max_loss_increase(trained, batch, c=c, steps=10, step_size=0.05)
        assert (delta >= 0).all()
        per_c.append(delta)
        medians.append(statistics.median(delta.tolist()))
    assert medians == sorted(medians) and medians[-1] > 10 * medians[0] > 0
    assert (per_c[-1] >= per_c[0]).all()
    # the evaluation changes neither the weights nor leaves a hook behind
    for k, v in trained.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert hooks_left(trained) == 0


def test_pgd_beats_the_clean_loss_more_with_more_steps(trained, batch):
    one, _ = max_loss_increase(trained, batch, c=0.5, steps=1, step_size=0.02)
    many, _ = max_loss_increase(trained, batch, c=0.5, steps=20, step_size=0.02)
    assert (many >= one - 1e-7).all() and many.sum() > one.sum()


def test_regression_head(batch):
    model = tiny_model(num_labels=1, regression=True, dropout=0.0, seed=0)
    inputs = {**batch, "labels": batch["labels"].float() * 3}
    delta, clean = max_loss_increase(model, inputs, c=0.5, steps=3, step_size=0.05)
    assert delta.shape == clean.shape == (len(inputs["labels"]),) and (delta >= 0).all() and delta.sum() > 0


def test_filter_normalised_direction_matches_filter_norms(model):
    d = filter_normalized_direction(model, torch.Generator().manual_seed(0))
    for name, p in model.named_parameters():
        if p.dim() <= 1:
            assert torch.count_nonzero(d[name]) == 0
        else:
            torch.testing.assert_close(
                d[name].flatten(1).norm(dim=1), p.detach().flatten(1).norm(dim=1), rtol=1e-4, atol=1e-6
            )


def test_loss_surface_center_is_the_model_and_weights_restored(trained, batch):
    before = {k: v.clone() for k, v in trained.state_dict().items()}
    res = loss_surface(trained, [batch], grid=3, span=5.0, seed=0)
    with torch.no_grad():
        center = trained(**batch).loss.item()
    assert res["loss"][1][1] == pytest.approx(center, rel=1e-5) == pytest.approx(res["center_loss"], rel=1e-5)
    around = [res["loss"][i][j] for i in range(3) for j in range(3) if (i, j) != (1, 1)]
    assert min(around) > 10 * center  # far from the fitted weights (5 filter norms) the training loss is higher
    for k, v in trained.state_dict().items():
        assert torch.equal(v, before[k]), k


@pytest.mark.skipif(
    not __import__("os").environ.get("ADVTUNE_DATA_DIR"), reason="ADVTUNE_DATA_DIR is not set (needs SST-2)"
)
def test_robustness_and_surface_commands_on_tiny_runs(tmp_path, capsys):
    """End to end through the pipeline: two tiny SST-2 runs, ΔL_max on shared correct examples, a surface PNG."""
    from advtune.cli import main
    from advtune.pipeline import train
    from advtune.testing import tiny_tokenizer

    model_dir = tmp_path / "tiny"
    tiny_model(num_labels=2, seed=0).save_pretrained(model_dir)
    tiny_tokenizer().save_pretrained(model_dir)
    run_dirs = []
    for epochs in (1, 2):  # same init and data order, different schedules: related but different models
        run_dirs.append(
            train(
                task="sst2",
                method="standard",
                output_dir=tmp_path / f"run{epochs}",
                model=str(model_dir),
                max_train_samples=64,
                max_eval_samples=40,
                max_length=32,
                num_train_epochs=epochs,
                learning_rate=1e-3,
                per_device_train_batch_size=16,
                save_strategy="no",
                use_cpu=True,
                seed=1,
                disable_tqdm=True,
            )
        )
    rc = main(
        [
            "robustness",
            "--run",
            str(run_dirs[0]),
            "--runs",
            str(run_dirs[1]),
            "--n",
            "40",
            "--steps",
            "3",
            "--step-size",
            "0.01",
        ]
    )
    assert rc == 0
    out = capsys.readouterr().out
    assert "ΔL_max" in out
    files = [json.loads(next((r / "robustness").glob("sst2.*.json")).read_text()) for r in run_dirs]
    assert files[0]["n_examples"] == files[1]["n_examples"] > 0  # the same, shared examples
    assert [e["idx"] for e in files[0]["examples"]] == [e["idx"] for e in files[1]["examples"]]
    assert all(e["delta_loss"] >= 0 for f in files for e in f["examples"])
    assert files[0]["steps"] == 3 and files[0]["c"] == 0.01 and files[0]["sample_seed"] is None
    first = {e["idx"] for e in files[0]["examples"]}
    assert main(["robustness", "--run", str(run_dirs[0]), "--n", "40", "--steps", "1", "--sample-seed", "3"]) == 0
    sampled = json.loads(next((run_dirs[0] / "robustness").glob("sst2.*.json")).read_text())
    assert sampled["sample_seed"] == 3 and {e["idx"] for e in sampled["examples"]} != first  # another sample

    assert main(["surface", "--run", str(run_dirs[0]), "--grid", "3", "--batches", "1", "--batch-size", "8"]) == 0
    png = next((run_dirs[0] / "surface").glob("*.png"))
    assert png.stat().st_size > 5000
    assert main(["robustness", "--run", str(tmp_path / "missing")]) == 2
