"""The job script's exit codes are the trainer's (hrkd_ds/errors.py): same numbers, and the script
requeues exactly REQUEUE_EXIT_CODES."""

from __future__ import annotations

import re
from pathlib import Path

from hrkd_ds import errors

REPO = Path(__file__).resolve().parents[2]


def test_distill_sh_declares_the_trainer_codes():
    text = (REPO / "slurm" / "distill.sh").read_text()
    declared = {m[1]: int(m[2]) for m in re.finditer(r"^(EXIT_[A-Z_]+)=(\d+)\b", text, re.M)}
    assert declared, "distill.sh declares no EXIT_* codes"
    for name, value in declared.items():
        assert getattr(errors, name) == value, name
    requeue = re.search(r"^REQUEUE_CODES=\((.*)\)", text, re.M)
    assert requeue, "distill.sh has no REQUEUE_CODES=(...)"
    codes = {declared[v.strip("${}")] for v in requeue[1].split()}
    assert codes == set(errors.REQUEUE_EXIT_CODES)
    assert not re.search(r"rc == \d|exit [3-9]\b", text), "a bare exit code literal in distill.sh"


def test_codes_are_distinct():
    assert len(set(errors.EXIT_CODES.values())) == len(errors.EXIT_CODES)
    assert errors.EXIT_DISK_FULL not in errors.REQUEUE_EXIT_CODES and errors.EXIT_USAGE not in errors.REQUEUE_EXIT_CODES
