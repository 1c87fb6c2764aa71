"""The real trainer with a full disk injected where HRKD_TEST_ENOSPC says (tests only).

    HRKD_TEST_ENOSPC=checkpoint:<n>[:<rank>]   the n-th checkpoint tag this rank writes fails half-way
    HRKD_TEST_ENOSPC=export:<n>                the n-th model export fails before its first file

The failures look as they do on a real full disk: torch.save's "unexpected pos" RuntimeError
raised from an ENOSPC OSError after part of the file is written; OSError(ENOSPC) from an export.
"""

from __future__ import annotations

import errno
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))


def _enospc() -> OSError:
    return OSError(errno.ENOSPC, "No space left on device")


def inject(spec: str) -> None:
    where, n, *rank = spec.split(":")
    n = int(n)
    if rank and rank[0] != os.environ.get("RANK", "0"):
        return
    if where == "checkpoint":
        from deepspeed.runtime.checkpoint_engine.torch_checkpoint_engine import TorchCheckpointEngine

        real, tags = TorchCheckpointEngine.save, []

        def save(self, state_dict, path):
            tag = Path(path).parent.name
            if tag not in tags:
                tags.append(tag)
            if len(tags) == n:
                Path(path).write_bytes(b"\0" * 4096)  # what got out before the disk filled
                raise RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 4160 vs 4054") from _enospc()
            return real(self, state_dict, path)

        TorchCheckpointEngine.save = save
    elif where == "export":
        from transformers import PreTrainedModel

        real_export, calls = PreTrainedModel.save_pretrained, [0]

        def save_pretrained(self, *args, **kwargs):
            calls[0] += 1
            if calls[0] == n:
                raise _enospc()
            return real_export(self, *args, **kwargs)

        PreTrainedModel.save_pretrained = save_pretrained
    else:
        raise SystemExit(f"fault_train.py: unknown HRKD_TEST_ENOSPC {spec!r}")


if __name__ == "__main__":
    if os.environ.get("HRKD_TEST_ENOSPC"):
        inject(os.environ["HRKD_TEST_ENOSPC"])
    from hrkd_ds.train import main

    sys.exit(main(sys.argv[1:]))
