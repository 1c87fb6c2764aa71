"""Which teacher layer each student layer learns from (docs/METHOD.md, "Layer map")."""

from __future__ import annotations

from hrkd_ds.errors import UserError


def resolve_layer_map(student_layers: int, teacher_layers: int, layer_map: list[int] | None = None) -> list[int]:
    """1-based teacher layer for each student layer: explicit, or uniform i * (L_t / L_s)."""
    if layer_map:
        if len(layer_map) != student_layers:
            raise UserError(f"config field 'distill.layer_map': {len(layer_map)} entries for {student_layers} student layers")
        bad = [j for j in layer_map if not 1 <= j <= teacher_layers]
        if bad:
            raise UserError(f"config field 'distill.layer_map': {bad} outside 1..{teacher_layers} (teacher depth)")
        return list(layer_map)
    if teacher_layers % student_layers:
        raise UserError(
            f"teacher depth {teacher_layers} is not a multiple of student depth {student_layers}: "
            "set 'distill.layer_map' (one 1-based teacher layer per student layer)"
        )
    step = teacher_layers // student_layers
    return [(i + 1) * step for i in range(student_layers)]
