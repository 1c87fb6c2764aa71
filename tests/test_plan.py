"""hrkd-plan: a hand-computed small case and the one-line refusal of bad input."""
from hrkd_ds import plan as P


def _args(**kw):
    a = P.build_parser().parse_args(["--teacher", "2x4x8x10", "--student", "1x4x8x10"])
    for k, v in kw.items():
        setattr(a, k, v)
    return a


def test_shape_params_hand_computed():
    # layer: 4*(16+4) + (32+8) + (32+4) + 16 = 172; embed (10+512+2)*4 + 8 = 2104; pooler 20; head 3*(4+1)
    assert P.Shape(2, 4, 8, 10).params() == 2 * 172 + 2104 + 20
    assert P.Shape(2, 4, 8, 10, outputs=3).params() == 2 * 172 + 2104 + 20 + 15


def test_zero3_teacher_is_one_over_n_and_adam_states():
    n = P.Shape(2, 4, 8, 10, outputs=8).params()
    parts = P.plan(_args(world_size=4, max_live_parameters=0, prefetch_bucket=0, fixed_gib=0.0))
    assert parts["teacher_params"] == n * 4 / 4
    sp = P.Shape(1, 4, 8, 10, outputs=8).params()
    assert parts["student_params"] == sp * 4 and parts["student_grads"] == sp * 4 / 4
    assert parts["student_optimizer"] == sp * 8 / 4


def test_bad_input_exit_2(capsys):
    assert P.main(["--teacher", "2x4", "--student", "1x4x8"]) == 2
    assert capsys.readouterr().err.strip().startswith("hrkd-plan: teacher:")


def test_params_equal_the_trainers_model():
    """The planner's count is the built model's parameter count, so its 1/N bytes are the measured ones."""
    from hrkd_ds.config import ModelConfig
    from hrkd_ds.models import build_model
    for layers, hidden in [(2, 64), (4, 128)]:
        cfg = ModelConfig(hidden_size=hidden, num_layers=layers, num_heads=hidden // 64, intermediate_size=4 * hidden)
        model = build_model(cfg, 5, 2, 1000, 0, 128)
        built = sum(p.numel() for p in model.parameters())
        assert P.Shape(layers, hidden, 4 * hidden, 1000, 128, outputs=10).params() == built


def test_matches_bench_memory_teacher_bytes():
    """docs/BENCHMARKS.md bench_memory: 24 x 1024 teacher, 1277 MiB held at N=1, 319 MiB per rank at N=4."""
    a = P.build_parser().parse_args(["--teacher", "24x1024x4096", "--student", "4x312x1200", "--world-size", "4",
                                     "--domains", "5", "--max-positions", "128"])
    mib = P.plan(a)["teacher_params"] / 2 ** 20
    assert abs(mib - 319.25) / 319.25 < 0.01
