#!/usr/bin/env bash
# Lowest-versions job: a clean virtual environment with CPU torch 2.13.0 and every other dependency
# at the floor that setup.py declares (read from setup.py, `>=X` becomes `==X`), the project
# installed with --no-deps, then a short teacher + distill run that must finish with results.json.
#
#   bash tools/test_lowest.sh            # venv cached in ~/.cache/hrkd-ds/venv-lowest-<hash>
#
# The venv is keyed by the hash of setup.py and this script, so a changed floor builds a new one;
# a warm rerun only reinstalls the project and trains. Environment:
#   HRKD_LOWEST_CACHE  parent of the cached venvs (default ~/.cache/hrkd-ds)
#   HRKD_LOWEST_WORK   directory for the run's output (default: a temporary one, removed after)
#   PYTHON             interpreter that creates the venv (default python3)
# Exit codes: 0 passed; 75 the package index could not be reached (nothing tested); other = failed.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-python3}
TORCH=2.13.0  # the only torch build available offline (CPU wheel); the floor in setup.py must match

key=$(cat "$REPO/setup.py" "$REPO/tools/test_lowest.sh" | sha256sum | cut -c1-16)
CACHE=${HRKD_LOWEST_CACHE:-$HOME/.cache/hrkd-ds}
VENV=$CACHE/venv-lowest-$key
mkdir -p "$CACHE"
exec 9>"$CACHE/venv-lowest-$key.lock"
flock 9  # one run at a time per venv (the editable install below points it at this checkout)

# Pins from setup.py's install_requires: every requirement needs a `>=` floor.
pins=$("$PY" - "$REPO/setup.py" "$TORCH" <<'EOF'
import ast, re, sys
tree = ast.parse(open(sys.argv[1], encoding="utf-8").read())
reqs = next(ast.literal_eval(kw.value) for node in ast.walk(tree) if isinstance(node, ast.Call)
            for kw in node.keywords if kw.arg == "install_requires")
for req in reqs:
    m = re.fullmatch(r"\s*([A-Za-z0-9_.\-\[\]]+)\s*(.*?)\s*(;.*)?", req)
    floors = [s.strip()[2:].strip() for s in m.group(2).split(",") if s.strip().startswith(">=")]
    if len(floors) != 1:
        sys.exit(f"setup.py: {req!r} has no single '>=' floor to test")
    name, floor = m.group(1), floors[0]
    if name.lower() == "torch" and [int(x) for x in floor.split(".")] + [0] * (3 - len(floor.split("."))) \
            != [int(x) for x in sys.argv[2].split(".")]:
        sys.exit(f"setup.py: torch floor {floor} is not the torch build this job can install ({sys.argv[2]})")
    print(f"{name}=={floor}")
EOF
)

pip_failed() {  # after a failed pip install: index unreachable (exit 75) or a real failure (exit 1)
  local probe
  probe=$(mktemp -d)
  if ! "$VENV/bin/python" -m pip download -q --no-deps --no-cache-dir --retries 0 --timeout 20 \
      -d "$probe" "$(grep -i '^deepspeed==' <<<"$pins")" >/dev/null 2>&1; then
    rm -rf "$probe" "$VENV"
    echo "SKIP: the package index is unreachable (could not download $(grep -i '^deepspeed==' <<<"$pins"))" >&2
    exit 75
  fi
  rm -rf "$probe" "$VENV"
  echo "FAIL: pip could not install the lowest versions (the index is reachable)" >&2
  exit 1
}

if [ ! -f "$VENV/.complete" ]; then
  echo "== building $VENV"
  rm -rf "$VENV"
  "$PY" -m venv "$VENV"
  printf '%s\n' "torch==$TORCH" >"$VENV/constraints.txt"
  printf '%s\n' "$pins" >"$VENV/lowest.txt"
  cat "$VENV/lowest.txt"
  pipi() { "$VENV/bin/python" -m pip install -q --disable-pip-version-check -c "$VENV/constraints.txt" "$@"; }
  pipi "torch==$TORCH" setuptools wheel || pip_failed
  # deepspeed ships only an sdist whose build imports torch: build it against the torch above.
  pipi --no-build-isolation -r "$VENV/lowest.txt" || pip_failed
fi
touch "$VENV/.complete"  # last use; venvs of other setup.py versions unused for a day are removed
for old in "$CACHE"/venv-lowest-*/; do
  old=${old%/}
  [ "$old" = "$VENV" ] && continue
  if [ -z "$(find "$old" -maxdepth 1 -name .complete -mmin -1440)" ] && flock -n "$old.lock" true 2>/dev/null; then
    rm -rf "$old" "$old.lock"
  fi
done

"$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e "$REPO"
"$VENV/bin/python" -m pip list --disable-pip-version-check 2>/dev/null \
  | grep -i -E '^(torch|deepspeed|transformers|datasets|wandb|sentencepiece|pyyaml|tqdm|matplotlib|numpy|huggingface.hub|tokenizers|hrkd-ds) '
"$VENV/bin/python" -m pip check --disable-pip-version-check

if [ -n "${HRKD_LOWEST_WORK:-}" ]; then
  WORK=$HRKD_LOWEST_WORK
  mkdir -p "$WORK"
else
  WORK=$(mktemp -d)
  trap 'rm -rf "$WORK"' EXIT
fi
rm -rf "$WORK/run" "$WORK/cache"
cd "$REPO"
# Its own tokenizer and tokenized-data cache, so nothing from another environment is reused.
env -u PYTHONPATH PYTHONNOUSERSITE=1 DS_ACCELERATOR=cpu HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false WANDB_SILENT=true \
  "$VENV/bin/python" hrkd_ds/train.py output_dir="$WORK/run" data.cache_dir="$WORK/cache" \
  tracking.wandb_mode=offline teacher_train.max_steps=6 distill_train.max_steps=6
"$VENV/bin/python" - "$WORK/run/results.json" <<'EOF'
import json, sys
res = json.load(open(sys.argv[1]))
for role in ("teacher", "student"):
    acc = res[role]["test"]["average"]
    assert 0.0 <= acc <= 1.0, (role, acc)
    print(f"{role} test average accuracy {acc:.3f}")
EOF
echo "OK: lowest versions pass (venv $VENV)"
