"""Where the run is: the stage, the last step a rank reached, what it is writing and how big.

A fault that unwinds the training loop (a collective that timed out, a full disk) is reported by
the trainer's entry point, far from the loop; this record lets that one line still name the stage,
the step and the write. Updated by train.py (stage), the non-finite guard, which sees every step's
loss and every write's weights first (step, export size), and checkpoint.save.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass
class Where:
    stage: str | None = None  # config name: general | teacher | distill | eval
    step: int | None = None  # the last step whose loss this rank computed in the stage
    writing: str | None = None  # "the student export", "a checkpoint", ...: the write under way
    write_dir: Path | None = None
    write_bytes: int | None = None

    def enter_stage(self, stage: str) -> None:
        self.stage, self.step = stage, None
        self.done_writing()

    def done_writing(self) -> None:
        self.writing = self.write_dir = self.write_bytes = None

    def start_writing(self, what: str, nbytes: int | None, directory: Path | None = None) -> None:
        self.writing, self.write_bytes, self.write_dir = what, nbytes, directory

    def describe(self) -> str:
        """'stage teacher, step 5' / 'stage distill, before its first step' / 'start-up'."""
        if self.stage is None:
            return "start-up (before the first stage)"
        return f"stage {self.stage}, " + (f"step {self.step}" if self.step is not None else "before its first step")


NOW = Where()
