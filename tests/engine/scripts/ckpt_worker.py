"""Save or resume real DeepSpeed (ZeRO-2, CPU) checkpoints of a tiny module; 1 process or torchrun.

    python ckpt_worker.py OUT save   -> checkpoints after steps 1..3; OUT/params_step<N>.json, OUT/rng_after_save.json
    python ckpt_worker.py OUT load   -> OUT/loaded.rank<R>.json: {"step" (None: fresh start), "params", "rng"} or {"error"}
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from hrkd_ds.engine import checkpoint  # noqa: E402
from hrkd_ds.engine.distributed import close_process_group, init_distributed  # noqa: E402
from hrkd_ds.errors import UserError  # noqa: E402

DS = {"train_micro_batch_size_per_gpu": 2, "gradient_accumulation_steps": 1, "zero_optimization": {"stage": 2},
      "steps_per_print": 10**6}


def engine(seed: int, world: int):
    import deepspeed

    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    eng, *_ = deepspeed.initialize(model=model, optimizer=opt, config={**DS, "train_batch_size": 2 * world})
    return eng


def params(eng) -> list[float]:
    return [round(float(p.detach().sum()), 6) for p in eng.module.parameters()]


def draws() -> list[float]:
    return [random.random(), float(np.random.rand()), float(torch.rand(1))]


def main(out: Path, mode: str) -> None:
    dist = init_distributed()
    try:
        run(out, mode, dist)
    except BaseException:
        close_process_group(together=False)
        raise
    close_process_group(together=True)  # leaving with the group open can abort a rank in gloo's teardown (CI met it)


def run(out: Path, mode: str, dist) -> None:
    ckpt = out / "checkpoints"
    if mode == "save":
        eng = engine(0, dist.world_size)
        for step in (1, 2, 3):
            loss = eng(torch.randn(2, 4)).pow(2).mean()
            eng.backward(loss)
            eng.step()
            checkpoint.save(eng, ckpt, step, {"step": step}, dist.rank)
            if dist.rank == 0:
                (out / f"params_step{step}.json").write_text(json.dumps(params(eng)))
        (out / f"rng_after_save.rank{dist.rank}.json").write_text(json.dumps(draws()))
        return
    eng = engine(1, dist.world_size)  # other weights: a load must replace them
    try:
        progress = checkpoint.load(eng, ckpt, dist.rank)
        row = {"step": None if progress is None else progress["step"], "params": params(eng), "rng": draws()}
    except UserError as err:
        row = {"error": str(err)}
    (out / f"loaded.rank{dist.rank}.json").write_text(json.dumps(row))


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2])
