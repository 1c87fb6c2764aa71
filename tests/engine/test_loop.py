"""Trainer.fit in-process against a fake engine: evaluation and checkpoint schedule, best-model
bookkeeping, predictions, and a preemption + resume that reproduces the uninterrupted run."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import datasets
import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from hrkd_ds.config import StageConfig
from hrkd_ds.data.collate import collate_episode
from hrkd_ds.data.sampler import EpisodicDomainSampler
from hrkd_ds.distill.methods import SupervisedModule
from hrkd_ds.engine.distributed import DistInfo
from hrkd_ds.engine.loop import Preempted, StageRun, Trainer
from hrkd_ds.engine.preemption import EXIT_PREEMPTED, PreemptionFlag
from hrkd_ds.tracking.metrics import MetricsLog
from hrkd_ds.tracking.wandb_run import WandbRun

DOMAINS = ["a", "b"]
VOCAB, CLASSES = 12, 2


class TinyClassifier(nn.Module):
    """Mean of token embeddings -> K*C logits, own-domain slice; no dropout, so runs are exact."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.emb = nn.Embedding(VOCAB, 8)
        self.head = nn.Linear(8, len(DOMAINS) * CLASSES)

    def forward(self, input_ids, attention_mask, token_type_ids=None, domain_ids=None):
        m = attention_mask.unsqueeze(-1).float()
        h = (self.emb(input_ids) * m).sum(1) / m.sum(1)
        logits = self.head(h).view(-1, len(DOMAINS), CLASSES)
        return SimpleNamespace(logits=logits[torch.arange(len(h)), domain_ids])


class FakeEngine:
    """The parts of a DeepSpeed engine the loop uses; SGD has no state, so a resume is exact."""

    def __init__(self, module: nn.Module) -> None:
        self.module = module
        self.opt = torch.optim.SGD(module.parameters(), lr=0.5)

    def __call__(self, batch, **kwargs):
        return self.module(batch, **kwargs)

    def backward(self, loss):
        loss.backward()

    def step(self):
        self.opt.step()
        self.opt.zero_grad()

    def train(self, mode=True):
        self.module.train(mode)

    def eval(self):
        self.module.eval()

    def get_lr(self):
        return [0.5]

    def gradient_accumulation_steps(self):
        return 1

    def save_checkpoint(self, save_dir, tag, client_state, save_latest):
        d = Path(save_dir) / tag
        d.mkdir(parents=True, exist_ok=True)
        save_file(self.module.state_dict(), str(d / "model.safetensors"))
        (d / "client.json").write_text(json.dumps(client_state))

    def load_checkpoint(self, load_dir, tag, load_module_strict=True):
        d = Path(load_dir) / tag
        self.module.load_state_dict(load_file(str(d / "model.safetensors")))
        return str(d), json.loads((d / "client.json").read_text())


def _split(n: int, seed: int) -> datasets.Dataset:
    g = torch.Generator().manual_seed(seed)
    rows = []
    for i in range(n):
        label = i % 2
        length = 2 + i % 4
        ids = (torch.randint(1, VOCAB // 2, (length,), generator=g) + label * (VOCAB // 2 - 1)).tolist()
        rows.append({"input_ids": ids, "attention_mask": [1] * length, "token_type_ids": [0] * length, "label": label})
    return datasets.Dataset.from_list(rows)


def _stage_run(tmp: Path, exports: list, on_step=None) -> StageRun:
    train = [_split(20, 1), _split(14, 2)]
    dev = {"a": _split(6, 3), "b": _split(5, 4)}
    test = {"a": _split(7, 5), "b": _split(4, 6)}
    steps = {"n": 0}

    def collate(episode):
        steps["n"] += 1
        if on_step:
            on_step(steps["n"])
        return collate_episode(train, episode, 0)

    stage = StageConfig(eval_every=3, save_every=2, log_every=1)
    sampler = EpisodicDomainSampler([len(t) for t in train], 3, seed=7)
    return StageRun(role="student", stage=stage, engine=FakeEngine(SupervisedModule(TinyClassifier(), 2)),
                    sampler=sampler, collate=collate, dev_sets=dev, test_sets=test, domains=DOMAINS, pad_id=0,
                    out_dir=tmp, total_steps=9, export=lambda dest: exports.append(dest.relative_to(tmp).as_posix()))


def _fit(tmp: Path, preempt_at: int | None = None):
    exports: list = []
    flag = PreemptionFlag()  # not installed: the test sets it
    run = _stage_run(tmp, exports, on_step=(lambda n: setattr(flag, "requested", n == preempt_at)))
    dist = DistInfo(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
    metrics = MetricsLog(tmp / "metrics.jsonl", enabled=True)
    best = Trainer(run, dist, metrics, WandbRun(False, "p", "disabled", str(tmp), "x", {}), flag, False).fit()
    return best, metrics, exports


def _losses(metrics: MetricsLog) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in metrics.rows("student") if "loss" in r}


def test_schedule_best_models_and_predictions(tmp_path):
    best, metrics, exports = _fit(tmp_path)
    evals = [r["step"] for r in metrics.rows("student") if "eval" in r]
    assert evals == [3, 6, 9]  # every 3 steps; the last step is already evaluated
    assert sorted(_losses(metrics)) == list(range(1, 10))
    assert all(set(r["terms"]["ce"]) == set(DOMAINS) for r in metrics.rows("student") if "loss" in r)
    tags = sorted(p.name for p in (tmp_path / "checkpoints").glob("step*"))
    assert tags == ["step00000008", "step00000009"]  # saves at 2,4,6,8 and the final 9; two kept
    assert best.final["step"] == 9 and best.overall["step"] in evals
    assert "model" in exports and {"best_by_domain/a", "best_by_domain/b"} <= set(exports)
    preds = json.loads((tmp_path / "predictions.json").read_text())
    assert preds["step"] == best.overall["step"]
    for d, n in (("a", 7), ("b", 4)):  # every test example, in split order, matching the accuracy
        p, y = preds["test"][d]["pred"], preds["test"][d]["label"]
        assert len(p) == len(y) == n
        assert sum(int(i == j) for i, j in zip(p, y)) / n == pytest.approx(best.overall["test"][d])


def test_preemption_then_resume_matches_uninterrupted(tmp_path):
    _, ref_metrics, _ = _fit(tmp_path / "ref")
    with pytest.raises(Preempted) as stop:
        _fit(tmp_path / "run", preempt_at=3)  # step 3 is an evaluation step: deferred past the checkpoint
    assert stop.value.code == EXIT_PREEMPTED
    assert max(_losses(MetricsLog(tmp_path / "run" / "metrics.jsonl", True))) == 3
    best, metrics, _ = _fit(tmp_path / "run")
    assert _losses(metrics) == _losses(ref_metrics)
    rows = lambda m: [(r["step"], r["eval"]) for r in m.rows("student") if "eval" in r]  # noqa: E731
    assert rows(metrics) == rows(ref_metrics)  # the deferred evaluation ran, once, with the same numbers


def test_non_finite_weights_are_never_checkpointed_or_exported(tmp_path):
    """A step that turns the weights NaN (finite loss, bad update) stops the run at the next write."""
    from hrkd_ds.engine.nonfinite import EXIT_DIVERGED, Diverged

    exports: list = []
    run = _stage_run(tmp_path, exports)
    engine, calls = run.engine, {"n": 0}
    plain_step = engine.step

    def poisoning_step():
        plain_step()
        calls["n"] += 1
        if calls["n"] == 3:
            with torch.no_grad():
                engine.module.model.head.weight.fill_(float("nan"))

    engine.step = poisoning_step
    dist = DistInfo(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
    trainer = Trainer(run, dist, MetricsLog(tmp_path / "metrics.jsonl", True),
                      WandbRun(False, "p", "disabled", str(tmp_path), "x", {}), PreemptionFlag(), False)
    with pytest.raises(Diverged) as stop:
        trainer.fit()
    assert stop.value.code == EXIT_DIVERGED and "step 3" in stop.value.message  # the evaluation at step 3 would export
    assert sorted(p.name for p in (tmp_path / "checkpoints").glob("step*")) == ["step00000002"]
    assert exports == []  # the only evaluation came after the poisoned step: nothing exported
