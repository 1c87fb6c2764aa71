"""Episodic multi-domain sampler: every step holds one batch from every domain, on every rank.

Stream construction (per epoch e, domain d, world size W, batch B, S steps):
  * p = permutation of the domain's n examples seeded by (seed, e, d, 0), identical on all ranks;
  * rank r owns the strided piece p[r::W] (near-equal sizes);
  * rank r's stream = its piece, then fresh permutations of its piece seeded by (seed, e, d, c, r)
    for cycles c = 1, 2, ... until S*B long; step s takes stream[s*B:(s+1)*B].
The global stream is the interleaving of the rank streams, so step s's global batch is
global[s*B*W:(s+1)*B*W] with rank r holding the contiguous block [r*B:(r+1)*B]. Strided pieces
make the global batch independent of W while no piece has cycled: step s of W ranks with batch B
holds exactly the examples p[s*B*W:(s+1)*B*W], the batch one rank with batch B*W gets, so runs
at different world sizes (same global batch) see the same data. Versus plain
concatenated global permutations, owning pieces keeps ranks disjoint at every step AND over the
whole epoch (a global wrap-around would hand an example already seen by one rank to another, and
a batch straddling two permutations could repeat an index across ranks). For W = 1 it is exactly
"concatenated fresh seeded permutations". All ranks run the same number of steps, so no rank can
hang in a collective. Seeds are numpy SeedSequences: independent of PYTHONHASHSEED.
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Iterator, Mapping, Sequence

import numpy as np

from hrkd_ds.errors import UserError

POLICIES = ("largest", "domain", "steps")


class EpisodicDomainSampler:
    """Yields episodes `list[list[int]]`: K lists of `batch_size` indices for this rank."""

    def __init__(self, domain_sizes: Sequence[int] | Mapping[str, int], batch_size: int, *, rank: int = 0, world_size: int = 1,
                 seed: int = 0, epoch_policy: str = "largest", epoch_domain: int | str | None = None,
                 steps_per_epoch: int | None = None) -> None:  # fmt: skip
        names = list(domain_sizes) if isinstance(domain_sizes, Mapping) else [str(i) for i in range(len(domain_sizes))]
        self.sizes = [int(n) for n in (domain_sizes.values() if isinstance(domain_sizes, Mapping) else domain_sizes)]
        self.names = names
        self.batch_size, self.rank, self.world_size, self.seed = int(batch_size), int(rank), int(world_size), int(seed)
        self.epoch_policy = epoch_policy
        self._check()
        self.epoch_domain = self._resolve_domain(epoch_domain) if epoch_policy == "domain" else None
        self.steps_per_epoch = self._steps(steps_per_epoch)
        self.epoch, self.step = 0, 0
        self._cache: tuple[int, list[np.ndarray]] | None = None

    # ------------------------------------------------------------ setup
    def _check(self) -> None:
        if not self.sizes:
            raise UserError("sampler: no domains")
        if self.batch_size < 1:
            raise UserError(f"sampler: batch_per_domain must be >= 1, got {self.batch_size}")
        if self.world_size < 1 or not 0 <= self.rank < self.world_size:
            raise UserError(f"sampler: rank {self.rank} out of range for world_size {self.world_size}")
        if self.epoch_policy not in POLICIES:
            raise UserError(f"epoch_policy: {self.epoch_policy!r} is not one of {', '.join(POLICIES)}")
        small = next((i for i, n in enumerate(self.sizes) if n < self.world_size), None)
        if small is not None:
            raise UserError(f"sampler: domain {self.names[small]!r} has {self.sizes[small]} training examples, fewer than world_size={self.world_size}")

    def _resolve_domain(self, epoch_domain: int | str | None) -> int:
        if isinstance(epoch_domain, str) and epoch_domain in self.names:
            return self.names.index(epoch_domain)
        if isinstance(epoch_domain, (int, np.integer)) and not isinstance(epoch_domain, bool) and 0 <= epoch_domain < len(self.sizes):
            return int(epoch_domain)
        raise UserError(f"epoch_domain: {epoch_domain!r} is not a domain (domains: {', '.join(self.names)})")

    def _steps(self, steps_per_epoch: int | None) -> int:
        global_batch = self.batch_size * self.world_size
        if self.epoch_policy == "steps":
            if not steps_per_epoch or steps_per_epoch < 1:
                raise UserError(f"steps_per_epoch: must be >= 1 when epoch_policy is 'steps', got {steps_per_epoch!r}")
            return int(steps_per_epoch)
        n = self.sizes[self.epoch_domain] if self.epoch_policy == "domain" else max(self.sizes)
        return math.ceil(n / global_batch)

    def fingerprint(self) -> str:
        """Everything that shapes the sequence except rank (any rank's state restores all ranks)."""
        spec = [self.sizes, self.batch_size, self.world_size, self.seed, self.epoch_policy, self.epoch_domain, self.steps_per_epoch]
        return hashlib.sha256(json.dumps(spec).encode()).hexdigest()[:16]

    # ------------------------------------------------------------ streams
    def _rank_stream(self, epoch: int, d: int) -> np.ndarray:
        n, need = self.sizes[d], self.steps_per_epoch * self.batch_size
        first = np.random.default_rng([self.seed, epoch, d, 0]).permutation(n)
        piece = first[self.rank::self.world_size]
        cycles = [piece] + [piece[np.random.default_rng([self.seed, epoch, d, c, self.rank]).permutation(piece.size)]
                            for c in range(1, math.ceil(need / piece.size))]  # fmt: skip
        return np.concatenate(cycles)[:need]

    def _streams(self, epoch: int) -> list[np.ndarray]:
        if self._cache is None or self._cache[0] != epoch:
            self._cache = (epoch, [self._rank_stream(epoch, d) for d in range(len(self.sizes))])
        return self._cache[1]

    def episode(self, epoch: int, step: int) -> list[list[int]]:
        """The episode of (epoch, step) for this rank, without touching the iteration state."""
        lo = step * self.batch_size
        return [s[lo : lo + self.batch_size].tolist() for s in self._streams(epoch)]

    # ------------------------------------------------------------ iteration + state
    def __len__(self) -> int:
        return self.steps_per_epoch

    def __iter__(self) -> Iterator[list[list[int]]]:
        """Remaining steps of the current epoch, then the epoch counter advances."""
        while self.step < self.steps_per_epoch:
            step = self.step
            self.step += 1  # counted before yielding: a checkpoint after this step resumes at the next
            yield self.episode(self.epoch, step)
        self.epoch, self.step = self.epoch + 1, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch, self.step = int(epoch), 0

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "step": self.step, "seed": self.seed, "fingerprint": self.fingerprint()}

    def load_state_dict(self, state: Mapping) -> None:
        """Refuses a state from a different data/batch/world/seed setup: it would silently
        resume a different trajectory."""
        if state.get("fingerprint") != self.fingerprint():
            raise UserError(
                f"sampler state: checkpoint was made with a different sampler setup (seed {state.get('seed')!r} vs {self.seed}, "
                "or domain sizes / batch_per_domain / world_size / epoch policy changed)"
            )
        if not 0 <= int(state["step"]) <= self.steps_per_epoch:
            raise UserError(f"sampler state: step {state['step']} outside 0..{self.steps_per_epoch}")
        self.epoch, self.step = int(state["epoch"]), int(state["step"])
