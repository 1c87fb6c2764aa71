"""Each choice list lives in one place; where code elsewhere must list the same names (the stage
runners, the methods, the data loaders, the Slurm script), it is held equal to the config's here."""

from __future__ import annotations

import ast
import re
import typing
from pathlib import Path

from hrkd_ds.analysis import readme_table, results
from hrkd_ds.analysis.cells import METHOD_ORDER
from hrkd_ds.analysis.grid import load_spec
from hrkd_ds.config.schema import (FROM_TEACHER, ROLE_OF_STAGE, SCHEDULE_OF_ROLE, STAGES, Config, DataConfig,
                                   DistillConfig, GraphConfig, StageConfig, StudentConfig)
from hrkd_ds.data.splits import _LOADERS
from hrkd_ds.distill.methods import METHODS
from hrkd_ds.models.attention import ATTENTION_KINDS
from hrkd_ds.train import STAGES as STAGE_RUNNERS

REPO = Path(__file__).resolve().parents[1]


def _choices(cls, name: str) -> tuple[str, ...]:
    typ = typing.get_type_hints(cls)[name]
    if typing.get_origin(typ) is list:
        (typ,) = typing.get_args(typ)
    return typing.get_args(typ)


def test_stages_are_the_config_s_in_its_order():
    assert _choices(Config, "stages") == STAGES
    assert tuple(STAGE_RUNNERS) == STAGES


def test_methods_a_run_can_choose_are_the_method_rows():
    """`general` is a row too, but the general stage runs it, never distill.method; the reports'
    method order lists the same methods."""
    assert set(_choices(DistillConfig, "method")) == set(METHODS) - {"general"} == set(METHOD_ORDER)


def test_data_formats_have_one_loader_each():
    assert set(_choices(DataConfig, "format")) == set(_LOADERS)


def test_the_slurm_script_takes_every_stage():
    script = (REPO / "slurm" / "distill.sh").read_text()
    words = re.search(r"\$1 =~ \^\(([a-z|]+)\)\$", script).group(1).split("|")
    assert set(words) == {"all", *STAGES}


def test_the_graph_ablations_are_one_list_in_two_orders():
    """The report compares them in results' order and the README lists them in its own (both orders
    reach committed output, so neither is derived from the other); they name the same grid methods."""
    assert set(results.ABLATIONS) == set(readme_table.ABLATIONS)
    assert len(set(results.ABLATIONS)) == len(results.ABLATIONS) == len(readme_table.ABLATIONS)
    assert set(results.ABLATIONS) <= set(load_spec(REPO / "configs" / "reproduce" / "grid.yaml")["methods"])


def test_attention_kinds_are_the_config_s():
    """models/attention.py checks a model's attention kind against its own tuple (models sit above
    config, and its order is in that check's message); the same kinds as distill.attention."""
    assert set(_choices(DistillConfig, "attention")) == set(ATTENTION_KINDS)


def test_the_general_stage_starts_from_teacher_weights_or_random():
    assert set(_choices(StudentConfig, "general_init")) - {"random"} <= set(FROM_TEACHER)


def test_each_training_stage_has_a_role_and_each_role_a_schedule():
    assert set(ROLE_OF_STAGE) == set(STAGES) - {"eval"}
    assert set(SCHEDULE_OF_ROLE) == set(ROLE_OF_STAGE.values())
    hints = typing.get_type_hints(Config)
    assert all(hints[field] is StageConfig for field in SCHEDULE_OF_ROLE.values())


def _init_literals(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, value) of every string compared with a model config's `.init` (==, !=, in, not in a
    tuple of strings) or passed as `init=` to a call (dataclasses.replace)."""
    def strings(node):
        items = node.elts if isinstance(node, (ast.Tuple, ast.List, ast.Set)) else [node]
        return [(n.lineno, n.value) for n in items if isinstance(n, ast.Constant) and isinstance(n.value, str)]

    def is_init(node):
        return isinstance(node, ast.Attribute) and node.attr == "init" and "graph" not in ast.unparse(node.value)

    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            sides = [node.left, *node.comparators]
            if any(is_init(side) for side in sides):
                found += [hit for side in sides if not is_init(side) for hit in strings(side)]
        elif isinstance(node, ast.Call):
            found += [hit for kw in node.keywords if kw.arg == "init" for hit in strings(kw.value)]
    return found


def test_every_student_init_the_code_names_is_a_choice():
    """`student.init` values are compared as strings in several modules (validate, the stage
    builders and checks, the model builder): each one is a value the config accepts. The graph's
    module reads graph.init (GraphConfig's own choices) instead."""
    graph_module = "hrkd_ds/distill/graph.py"
    named = {(str(path.relative_to(REPO)), line, value)
             for path in sorted((REPO / "hrkd_ds").rglob("*.py"))
             for line, value in _init_literals(ast.parse(path.read_text()))}
    assert {value for _, _, value in named} >= {"general", "teacher_layers", "teacher_select", "pretrained", "random"}
    choices = {path: set(_choices(GraphConfig if path == graph_module else StudentConfig, "init")) for path, _, _ in named}
    assert [(f"{path}:{line}", value) for path, line, value in sorted(named) if value not in choices[path]] == []


def test_a_misspelt_init_is_found():
    tree = ast.parse("if cfg.student.init == 'teacher_layer' or m.init in ('random', 'genral'):\n    pass\n"
                     "x = replace(m, init='pretrained')\nif graph.init == 'ours':\n    pass\n")
    assert sorted(_init_literals(tree)) == [(1, "genral"), (1, "random"), (1, "teacher_layer"), (3, "pretrained")]
