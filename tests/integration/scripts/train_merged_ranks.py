"""train.py in ONE process, fed exactly the global batch a W-rank run sees at every step.

    python tests/integration/scripts/train_merged_ranks.py --ranks W [train.py args ...]

Why: the episodic sampler gives each rank a contiguous np.array_split piece of the epoch's
permutation, so a 1-rank run with batch_per_domain = W*B does NOT see the same global batch as
a W-rank run with B (1 rank takes perm[s*W*B:(s+1)*W*B]; W ranks take perm[piece_r][s*B:(s+1)*B]).
This script keeps everything else of train.py and only swaps the sampler: W EpisodicDomainSampler
objects (rank r of W, batch B = batch_per_domain / W) whose per-domain index lists are concatenated
rank-major inside each domain, the same rows, in the same order, that the W ranks hold together.
With dropout 0 the per-domain-mean loss and the rank-averaged gradient are then the same function
of the same examples, so per-step losses must agree up to float summation order.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from hrkd_ds import train  # noqa: E402
from hrkd_ds.data.sampler import EpisodicDomainSampler  # noqa: E402


class MergedRanks:
    """Quacks like EpisodicDomainSampler for the loop: iteration, steps_per_epoch, state."""

    def __init__(self, samplers: list[EpisodicDomainSampler]) -> None:
        self.samplers = samplers
        self.steps_per_epoch = samplers[0].steps_per_epoch
        assert all(s.steps_per_epoch == self.steps_per_epoch for s in samplers)

    def __len__(self) -> int:
        return self.steps_per_epoch

    def __iter__(self):
        its = [iter(s) for s in self.samplers]
        while True:
            episodes = [next(it, None) for it in its]  # every generator advanced, so all finish their epoch together
            if any(e is None for e in episodes):
                assert all(e is None for e in episodes)
                return
            yield [[i for ep in episodes for i in ep[d]] for d in range(len(episodes[0]))]

    def state_dict(self) -> dict:
        return self.samplers[0].state_dict()

    def load_state_dict(self, state) -> None:
        for s in self.samplers:
            s.load_state_dict(state)


def main(argv: list[str]) -> int:
    assert argv[0] == "--ranks", "usage: train_merged_ranks.py --ranks W [train.py args]"
    world = int(argv[1])
    original = train.Run.sampler

    def merged_sampler(self, stage):
        base = original(self, stage)  # validates the stage's epoch policy like train.py does
        if stage.batch_per_domain % world:
            raise SystemExit(f"batch_per_domain {stage.batch_per_domain} is not divisible by {world}")
        b = stage.batch_per_domain // world
        return MergedRanks([
            EpisodicDomainSampler(base.sizes, b, rank=r, world_size=world, seed=base.seed, epoch_policy=base.epoch_policy,
                                  epoch_domain=base.epoch_domain, steps_per_epoch=stage.steps_per_epoch or None)
            for r in range(world)
        ])  # fmt: skip

    train.Run.sampler = merged_sampler
    return train.main(argv[2:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
