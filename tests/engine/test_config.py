"""Config: YAML + overrides, validated once with one-line errors (exit code 2 from the CLI)."""

import subprocess
import sys

import pytest

from hrkd_ds.config import load_config, save_config
from hrkd_ds.errors import UserError
from tests.conftest import REPO_ROOT


def test_defaults_are_valid_and_overrides_apply(tmp_path):
    cfg = load_config(None, ["data.max_seq_len=64", "graph.trainable=false", "distill.layer_map=[2,4]",
                             "stages=teacher,distill", "distill_train.lr=1e-4"])
    assert cfg.data.max_seq_len == 64 and cfg.graph.trainable is False
    assert cfg.distill.layer_map == [2, 4] and cfg.stages == ["teacher", "distill"]
    assert cfg.distill_train.lr == pytest.approx(1e-4)


def test_yaml_then_override_and_round_trip(tmp_path):
    y = tmp_path / "exp.yaml"
    y.write_text("seed: 7\ndata:\n  format: mnli\n  domains: [fiction, travel]\nstudent:\n  num_layers: 2\n")
    cfg = load_config(str(y), ["seed=8"])
    assert cfg.seed == 8 and cfg.data.format == "mnli" and cfg.data.domains == ["fiction", "travel"]
    assert cfg.student.num_layers == 2
    save_config(cfg, tmp_path / "out.yaml")
    again = load_config(str(tmp_path / "out.yaml"))
    assert again == cfg


@pytest.mark.parametrize(
    "overrides, needle",
    [
        (["data.nope=1"], "unknown config key 'data.nope'"),
        (["nope.x=1"], "unknown config key 'nope'"),
        (["data.max_seq_len=abc"], "'data.max_seq_len'"),
        (["data.train_fraction=1.5"], "'data.train_fraction'"),
        (["distill.method=magic"], "'distill.method'"),
        (["graph.enabled=maybe"], "'graph.enabled'"),
        (["teacher.num_heads=5"], "'teacher.num_heads'"),
        (["stages=teacher,bake"], "'stages'"),
        (["stages=distill,teacher"], "'stages'"),
        (["stages=teacher,teacher"], "'stages'"),
        (["stages=general,distill", "teacher.init=pretrained", "teacher.pretrained=/x"], "'student.init'"),
        (["distill_train.epoch_policy=domain"], "'distill_train.epoch_domain'"),
        (["student.init=teacher_layers"], "'student.teacher_layers'"),
        (["distill.general_skip_cls=true", "distill.normalization=reference"], "'distill.general_skip_cls'"),
        (["seed"], "expected key.sub=value"),
        (["train.malloc_mmap_threshold_kib=-1"], "'train.malloc_mmap_threshold_kib'"),
        (["train.malloc_mmap_threshold_kib=65536"], "'train.malloc_mmap_threshold_kib'"),
        (["train.malloc_trim_every=-5"], "'train.malloc_trim_every'"),
    ],
)
def test_bad_values_name_the_field(overrides, needle):
    with pytest.raises(UserError) as err:
        load_config(None, overrides)
    assert needle in str(err.value)
    assert "\n" not in str(err.value)


def test_bad_yaml_files(tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_config(str(tmp_path / "missing.yaml"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [unclosed\n")
    with pytest.raises(UserError, match="bad.yaml"):
        load_config(str(bad))
    typed = tmp_path / "typed.yaml"
    typed.write_text("data:\n  max_seq_len: [1, 2]\n")
    with pytest.raises(UserError, match="data.max_seq_len"):
        load_config(str(typed))


@pytest.mark.parametrize(
    "args, needle",
    [
        (["data.max_seq_len=-3"], "data.max_seq_len"),
        (["--deepspeed", "ds_configs/missing.json"], "missing.json"),
        (["--config", "nowhere.yaml"], "nowhere.yaml"),
    ],
)
def test_cli_bad_input_exits_2_with_one_line(tmp_path, args, needle):
    proc = subprocess.run([sys.executable, "hrkd_ds/train.py", *args, f"output_dir={tmp_path}/run"],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in proc.stderr
    assert not (tmp_path / "run").exists()  # nothing written for a rejected run


def test_default_yaml_spells_out_every_default():
    """configs/default.yaml says it is the embedded default spelled out: every field, same values."""
    import yaml

    from hrkd_ds.config import Config, to_dict

    assert yaml.safe_load((REPO_ROOT / "configs" / "default.yaml").read_text()) == to_dict(Config())
