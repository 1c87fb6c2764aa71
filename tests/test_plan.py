"""hrkd-plan: a hand-computed small case and the one-line refusal of bad input."""
import itertools

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
    parts = P.plan(_args(world_size=4, max_live_parameters=0, prefetch_bucket=0, fixed_gib=0.0, loss="none"))
    assert parts["teacher_params"] == n * 4 / 4
    sp = P.Shape(1, 4, 8, 10, outputs=8).params()
    # ZeRO-2: gradient partition + the contiguous bucket every gradient passes through; Adam m, v
    # + the fp32 master copy of the partition
    assert parts["student_params"] == sp * 4 and parts["student_grads"] == sp * 4 / 4 + sp * 4
    assert parts["student_optimizer"] == sp * 8 / 4 + sp * 4 / 4


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


def test_loss_params_equal_the_trainers_loss():
    """The HRKD loss's projections and graph train with the student: counted as the built loss counts them."""
    from hrkd_ds.config import DistillConfig, GraphConfig
    from hrkd_ds.distill import RelationalDistillLoss, resolve_layer_map

    class Enc:
        def __init__(self, hidden, layers):
            self.hidden_size, self.num_layers = hidden, layers
    for ((sl, sh), (tl, th)), attention in itertools.product([((2, 32), (4, 64)), ((4, 312), (12, 768))], ("gat", "gatv2")):
        loss = RelationalDistillLoss.from_config(Enc(sh, sl), Enc(th, tl), 3, GraphConfig(attention=attention),
                                                 DistillConfig(layer_map=resolve_layer_map(sl, tl, None)))
        built = sum(p.numel() for p in loss.parameters())
        assert P.loss_params(P.Shape(sl, sh, 4 * sh), P.Shape(tl, th, 4 * th), graph=True, domains=3,
                             dynamic=attention == "gatv2") == built, attention


def test_matches_bench_memory_teacher_bytes():
    """docs/BENCHMARKS.md bench_memory: 24 x 1024 teacher, 1277 MiB held at N=1, 319 MiB per rank at N=4."""
    a = P.build_parser().parse_args(["--teacher", "24x1024x4096", "--student", "4x312x1200", "--world-size", "4",
                                     "--domains", "5", "--max-positions", "128"])
    mib = P.plan(a)["teacher_params"] / 2 ** 20
    assert abs(mib - 319.25) / 319.25 < 0.01


def test_gather_buffer_hand_computed():
    """Live: the whole teacher under the default cap (n < 1e9); in flight beside it (gloo, 2
    copies): the largest submodule (embeddings 10 x 4) + prefetch bucket, within the live cap."""
    n = P.Shape(2, 4, 8, 10, outputs=8).params()
    parts = P.plan(_args(world_size=2, prefetch_bucket=100, max_live_parameters=10 ** 9))
    assert parts["teacher_gather"] == (n + 40 + 100) * 4
    capped = P.plan(_args(prefetch_bucket=100, max_live_parameters=20))  # below one submodule: that submodule
    assert capped["teacher_gather"] == (40 + 40) * 4
    assert P.plan(_args(prefetch_bucket=0, gather_copies=1.0))["teacher_gather"] == n * 4


def test_shapes_from_model_directories(tmp_path, capsys):
    (tmp_path / "config.json").write_text('{"num_hidden_layers": 2, "hidden_size": 4, "intermediate_size": 8, '
                                          '"vocab_size": 10, "max_position_embeddings": 512}')
    a = P.build_parser().parse_args(["--teacher-dir", str(tmp_path), "--student", "1x4x8x10"])
    assert P.plan(a) == P.plan(_args())
    assert P.main(["--teacher-dir", str(tmp_path / "nowhere"), "--student", "1x4x8x10"]) == 2
    assert capsys.readouterr().err.strip().startswith("hrkd-plan: teacher_dir: cannot read a BERT shape from")
    assert P.main(["--teacher", "2x4x8", "--teacher-dir", str(tmp_path), "--student", "1x4x8"]) == 2
    assert "teacher: give exactly one of" in capsys.readouterr().err


def test_matches_a_measured_big_teacher_run():
    """docs/BENCHMARKS.md, tools/bench_big_teacher.py, 12 x 768 teacher on 2 ranks (2-core CPU):
    fixed 482 MiB, load peak 942-948 MiB, step peak 1718-1737 MiB per rank."""
    a = P.build_parser().parse_args(["--teacher", "12x768x3072", "--student", "4x312x1200", "--world-size", "2",
                                     "--domains", "2", "--batch-per-domain", "1", "--seq-len", "32", "--max-positions", "32"])
    parts = {k: v / 2 ** 20 for k, v in P.plan(a).items()}
    for key, measured in [("load_peak", 945), ("step_peak", 1727), ("teacher_gather", 692)]:
        assert abs(parts[key] - measured) / measured < 0.15, (key, parts[key])


def test_inputs_from_a_run_config(tmp_path):
    """--config: shapes (a pretrained teacher's from its config.json; a teacher_layers student at the
    teacher's width), domains, length, batch and the teacher JSON's settings, flags still winning."""
    teacher = tmp_path / "teacher"
    teacher.mkdir()
    (teacher / "config.json").write_text('{"num_hidden_layers": 6, "hidden_size": 384, "intermediate_size": 1536, '
                                         '"vocab_size": 30522, "max_position_embeddings": 512}')
    run = tmp_path / "run.yaml"
    run.write_text(f"data:\n  max_seq_len: 64\n  domains: [a, b, c]\nteacher:\n  init: pretrained\n  pretrained: {teacher}\n"
                   "student:\n  init: teacher_layers\n  teacher_layers: [2, 4]\ndistill_train:\n  batch_per_domain: 4\n"
                   "tokenizer:\n  kind: pretrained\n  path: " + str(teacher) + "\n")
    a = P.parse(["--config", str(run), "--world-size", "2"])
    assert (a.teacher, a.student) == ("6x384x1536x30522", "2x384x1536x30522")
    assert (a.domains, a.seq_len, a.batch_per_domain, a.teacher_stage, a.teacher_dtype, a.student_stage) == (3, 64, 4, 3, "fp32", 2)
    assert P.parse(["--config", str(run), "--seq-len", "32"]).seq_len == 32
    assert P.main(["--config", str(tmp_path / "nowhere.yaml")]) == 2


def test_the_loss_kind_a_config_plans_is_what_its_method_builds():
    """--config sets --loss from distill.method: only hrkd with its graph on counts the graph."""
    from hrkd_ds.config import GraphConfig
    from hrkd_ds.distill.methods import METHODS
    from hrkd_ds.plan_inputs import loss_kind

    for name, spec in METHODS.items():
        if name == "general":  # the task-agnostic stage is not a distill.method
            continue
        for enabled in (True, False):
            built = "none" if spec.graph is None else ("hrkd" if spec.graph(GraphConfig(enabled=enabled)).enabled else "no-graph")
            assert loss_kind(name, enabled) == built, name


def test_a_config_plans_its_methods_graph_its_attention_and_w_p(tmp_path):
    from hrkd_ds.plan_inputs import config_defaults

    cfg = tmp_path / "run.yaml"
    cfg.write_text("distill:\n  method: logit-kd\n  terms:\n    pool:\n      weight: 1.0\n")
    d = config_defaults(str(cfg), "ds_configs/zero2.json", shapes=False)
    assert d["loss"] == "no-graph" and d["pooled"] is True
    cfg.write_text("distill:\n  method: hrkd\ngraph:\n  attention: gatv2\n")
    d = config_defaults(str(cfg), "ds_configs/zero2.json", shapes=False)
    assert d["loss"] == "hrkd" and d["pooled"] is False and d["graph_attention"] == "gatv2"


def test_the_pooled_projection_is_counted_as_the_built_loss_counts_it():
    from hrkd_ds.config import DistillConfig, GraphConfig, TermConfig
    from hrkd_ds.distill import RelationalDistillLoss, resolve_layer_map

    class Enc:
        def __init__(self, hidden, layers):
            self.hidden_size, self.num_layers = hidden, layers
    loss = RelationalDistillLoss.from_config(Enc(32, 2), Enc(64, 4), 3, GraphConfig(enabled=False),
                                             DistillConfig(layer_map=resolve_layer_map(2, 4, None),
                                                           terms={"pool": TermConfig(weight=1.0)}))
    built = sum(p.numel() for p in loss.parameters())
    assert P.loss_params(P.Shape(2, 32, 128), P.Shape(4, 64, 256), graph=False, domains=3, pooled=True) == built
    assert P.loss_params(P.Shape(2, 32, 128), P.Shape(4, 64, 256), graph=False, domains=3) < built
