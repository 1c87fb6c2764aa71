"""Defaults <- YAML <- `key.sub=value` overrides, type-checked against the dataclass annotations.

Validated once, here at the edge: an unknown key, a wrong type, a value outside a `Literal`'s
choices or out of range raises `UserError` naming the field, so the rest of the code can trust
the config.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import typing
from pathlib import Path
from typing import Any, Literal

import yaml

from hrkd_ds.config.schema import Config
from hrkd_ds.config.validate import validate
from hrkd_ds.errors import UserError
from hrkd_ds.io import atomic_write_text


def _coerce(value: Any, typ: Any, name: str) -> Any:
    """Check (and for CLI strings, parse) one leaf value against its annotated type."""
    origin = typing.get_origin(typ)
    if origin is list:
        (item_t,) = typing.get_args(typ)
        if isinstance(value, str):
            value = yaml.safe_load(value) if value.strip() else []
            if isinstance(value, str) or not isinstance(value, list):
                value = [v for v in str(value).split(",") if v != ""]
        if not isinstance(value, list):
            raise UserError(f"config field '{name}': expected a list, got {value!r}")
        return [_coerce(v, item_t, name) for v in value]
    if origin is Literal:
        choices = typing.get_args(typ)
        if value is None:
            value = ""
        if isinstance(value, bool) or str(value) not in choices:
            raise UserError(f"config field '{name}': {value!r} is not one of {', '.join(repr(c) for c in choices)}")
        return str(value)
    if typ is bool:
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no", "on", "off"):
            return value.lower() in ("true", "1", "yes", "on")
        if isinstance(value, bool):
            return value
        raise UserError(f"config field '{name}': expected true/false, got {value!r}")
    if typ in (int, float):
        accepted = int if typ is int else (int, float)  # an int field takes no 1.5, a float field takes 2
        if isinstance(value, str):
            try:
                return typ(value)
            except ValueError:
                pass
        elif isinstance(value, accepted) and not isinstance(value, bool):
            return typ(value)
        raise UserError(f"config field '{name}': expected {'an integer' if typ is int else 'a number'}, got {value!r}")
    if typ is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        if value is None:
            return ""
        raise UserError(f"config field '{name}': expected a string, got {value!r}")
    raise TypeError(f"unsupported config type {typ} for {name}")


# Keys of earlier releases, read as what replaced them: old key -> (new key, its type, the old
# default). A value equal to the old default sets nothing, so a run saved before the rename resumes
# under the same settings (resume.py reads saved configs through `migrate` too).
RENAMED: dict[str, tuple[str, Any, Any]] = {
    "distill.label_weight": ("distill.terms.ce.weight", float, 0.0),
    "distill.attention_loss": ("distill.terms.att.weight", bool, True),  # false -> weight 0
}


def migrate(values: dict[str, Any]) -> dict[str, Any]:
    """A nested mapping with every RENAMED key rewritten to its replacement (a new dict)."""
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in values.items()}
    for old, (new, typ, default) in RENAMED.items():
        *parents, leaf = old.split(".")
        holder = out
        for part in parents:
            holder = holder.get(part) if isinstance(holder, dict) else None
        if not isinstance(holder, dict) or leaf not in holder:
            continue
        value = _coerce(holder.pop(leaf), typ, old)
        if value == default:
            continue
        value = (1.0 if value else 0.0) if typ is bool else value
        *new_parents, new_leaf = new.split(".")
        target = out
        for part in new_parents:
            inner = target.get(part)
            target[part] = dict(inner) if isinstance(inner, dict) else {}
            target = target[part]
        if new_leaf in target:
            raise UserError(f"config field '{old}': renamed to '{new}', which is set too; set only '{new}'")
        target[new_leaf] = value
    return out


def _apply(obj: Any, values: dict[str, Any], prefix: str = "") -> None:
    """Merge a nested mapping into dataclass `obj`, rejecting unknown keys."""
    hints = typing.get_type_hints(type(obj))
    for key, value in values.items():
        name = f"{prefix}{key}"
        if key not in hints:
            raise UserError(f"unknown config key '{name}'")
        typ = hints[key]
        if dataclasses.is_dataclass(typ):
            if not isinstance(value, dict):
                raise UserError(f"config field '{name}': expected a mapping, got {value!r}")
            _apply(getattr(obj, key), value, f"{name}.")
        elif typing.get_origin(typ) is dict:  # name -> dataclass, e.g. distill.terms.<term>
            _apply_named(getattr(obj, key), typing.get_args(typ)[1], value, name)
        else:
            setattr(obj, key, _coerce(value, typ, name))


def _apply_named(current: dict[str, Any], item_type: Any, values: Any, name: str) -> None:
    """Merge {name: mapping} into a dict of `item_type` dataclasses (new names start from defaults)."""
    if not isinstance(values, dict):
        raise UserError(f"config field '{name}': expected a mapping, got {values!r}")
    for key, value in values.items():
        if not isinstance(value, dict):
            raise UserError(f"config field '{name}.{key}': expected a mapping, got {value!r}")
        item = current.get(str(key)) or item_type()
        _apply(item, value, f"{name}.{key}.")
        current[str(key)] = item


def _set_dotted(cfg: Config, dotted: str, raw: str) -> None:
    """Apply one `a.b=value` override from the command line."""
    parts = dotted.split(".")
    nested: dict[str, Any] = {parts[-1]: raw}
    for part in reversed(parts[:-1]):
        nested = {part: nested}
    _apply(cfg, migrate(nested))


def resolve_package_path(value: str, name: str) -> str:
    """`pkg:<module>/<sub/path>` -> a directory inside an installed package (e.g. a PyPI-shipped model)."""
    if not value.startswith("pkg:"):
        return value
    module, _, sub = value[4:].partition("/")
    spec = importlib.util.find_spec(module) if module else None
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"config field '{name}': package {module!r} is not installed ({value})")
    path = Path(list(spec.submodule_search_locations)[0]) / sub
    if not path.exists():
        raise UserError(f"config field '{name}': {path} does not exist ({value})")
    return str(path)


def _resolve_paths(cfg: Config) -> None:
    cfg.teacher.pretrained = resolve_package_path(cfg.teacher.pretrained, "teacher.pretrained")
    cfg.student.pretrained = resolve_package_path(cfg.student.pretrained, "student.pretrained")
    cfg.tokenizer.path = resolve_package_path(cfg.tokenizer.path, "tokenizer.path")
    cfg.teacher_from = resolve_package_path(cfg.teacher_from, "teacher_from")


def load_config(path: str | None = None, overrides: list[str] | None = None) -> Config:
    """Defaults <- YAML file <- `key.sub=value` overrides, then validate."""
    cfg = Config()
    if path:
        p = Path(path)
        if not p.is_file():
            raise UserError(f"config file not found: {path}")
        try:
            values = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            where = f" line {mark.line + 1}" if mark is not None else ""
            raise UserError(f"config file {path}{where}: not valid YAML") from None
        if not isinstance(values, dict):
            raise UserError(f"config file {path}: top level must be a mapping")
        _apply(cfg, migrate(values))
    for item in overrides or []:
        if "=" not in item:
            raise UserError(f"override {item!r}: expected key.sub=value")
        key, raw = item.split("=", 1)
        _set_dotted(cfg, key.strip(), raw)
    _resolve_paths(cfg)
    return validate(cfg)


def to_dict(cfg: Config) -> dict[str, Any]:
    """Plain mapping for saving the resolved config with the run."""
    return dataclasses.asdict(cfg)


def save_config(cfg: Config, path: str | Path) -> None:
    """Write the resolved config as YAML (atomically) so a run can be reproduced."""
    atomic_write_text(path, yaml.safe_dump(to_dict(cfg), sort_keys=False))
