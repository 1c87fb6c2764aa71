"""Benchmark the fused HRKD loss against the per-domain loop, and against the memory floor.

Paper shapes by default: K=5 domains x 8 examples, 128 tokens (random right padding), student
4 layers / hidden 312 / 12 heads, teacher 12 layers / hidden 768 / 12 heads (every 3rd layer
mapped). Times forward+backward (median of --repeats runs after warm-up, same process).

Two rows per implementation:
- "att+hid terms": the masked MSE over attention maps and (already projected) hidden states,
  the memory-bound part the fused kernel targets; compared with the bytes-moved floor.
- "full loss": RelationalDistillLoss vs ReferenceDistillLoss end to end (projection matmuls,
  prototypes, graph, soft CE) with the same parameters.

Floor = minimal bytes / measured copy bandwidth, where minimal bytes = every input tensor read
once in forward and once in backward, plus every gradient written once.

Last line: `fused_speedup_vs_loop: <x>` for the full loss.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from hrkd_ds.config import GraphConfig
from hrkd_ds.distill.masked_sums import masked_squared_error_sums
from hrkd_ds.distill.terms import attention_mse, hidden_mse, pair_mask, token_mask
from hrkd_ds.distill.reference_loss import ReferenceDistillLoss
from hrkd_ds.distill.relational_loss import RelationalDistillLoss
from hrkd_ds.models.encoder import EncoderOutputs


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device, repeats: int, warmup: int = 2) -> float:
    """Median wall time (ms) of fn() over `repeats` runs after `warmup` runs."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def timed_interleaved(fns: dict, device, repeats: int, warmup: int = 2) -> dict[str, float]:
    """Median ms per case, cases run round-robin so machine load hits them all alike."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for i in range(warmup + repeats):
        for name, fn in fns.items():
            sync(device)
            t0 = time.perf_counter()
            fn()
            sync(device)
            if i >= warmup:
                times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(ts) * 1e3 for name, ts in times.items()}


def bandwidth(device, repeats: int) -> float:
    """Bytes/s of a large tensor copy (read + write), median over repeats."""
    src = torch.empty(64 * 2**20, device=device)  # 256 MiB
    dst = torch.empty_like(src)
    ms = timed(lambda: dst.copy_(src), device, repeats)
    return 2 * src.numel() * src.element_size() / (ms / 1e3)


def make_inputs(a, device, gen):
    """Domain-major student/teacher outputs with random right padding."""
    K, B, T = a.domains, a.batch, a.seq
    N = K * B
    lens = torch.randint(T // 4, T + 1, (N,), generator=gen)
    mask = (torch.arange(T)[None] < lens[:, None]).long()
    neg = torch.finfo(torch.float32).min

    def outputs(L, H, heads, grad):
        att = [(torch.randn(N, heads, T, T, generator=gen) + (1 - mask[:, None, None, :].float()) * neg) for _ in range(L)]
        hid = [torch.randn(N, T, H, generator=gen) for _ in range(L)]
        emb, logits = torch.randn(N, T, H, generator=gen), torch.randn(N, a.classes, generator=gen)
        mv = lambda x: x.to(device).requires_grad_(grad)  # noqa: E731
        return EncoderOutputs(mv(logits), mv(logits), mv(emb), tuple(map(mv, hid)), tuple(map(mv, att)))

    student = outputs(a.student_layers, a.student_hidden, a.heads, True)
    teacher = outputs(a.teacher_layers, a.teacher_hidden, a.heads, False)
    return student, teacher, mask.to(device)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--domains", type=int, default=5)
    ap.add_argument("--batch", type=int, default=8, help="examples per domain")
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--student-layers", type=int, default=4)
    ap.add_argument("--teacher-layers", type=int, default=12)
    ap.add_argument("--student-hidden", type=int, default=312)
    ap.add_argument("--teacher-hidden", type=int, default=768)
    ap.add_argument("--heads", type=int, default=12)
    ap.add_argument("--classes", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--compile", action="store_true", help="also time torch.compile of the fused loss")
    ap.add_argument("--compiled-terms", action="store_true", help="also time distill.compiled_terms (CPU; compiles first)")
    return ap.parse_args(argv)


def term_cases(s_att, t_att, s_proj, t_hid, mask, K: int, B: int):
    """The att+hid terms alone: the per-domain loop, and the fused sums (`compiled`: through torch.compile)."""
    def terms_fused(compiled: bool = False):
        def run():
            tok, pairs = token_mask(mask, torch.float32), pair_mask(mask, torch.float32)
            total = (masked_squared_error_sums(s_att, t_att, pairs, K, compiled=compiled).sum()
                     + masked_squared_error_sums(s_proj, t_hid, tok, K, compiled=compiled).sum())
            total.backward()
        return run

    def terms_loop():
        total = 0.0
        for d in range(K):
            r = slice(d * B, (d + 1) * B)
            for s, t in zip(s_att, t_att):
                total = total + attention_mse(s[r], t[r], mask[r])
            for s, t in zip(s_proj, t_hid):
                total = total + hidden_mse(s[r], t[r], mask[r])
        total.backward()

    return terms_loop, terms_fused


def build_cases(a, device: torch.device):
    """The timed cases (name -> one forward+backward), the function that clears their gradients
    between runs, and the bytes floor of the att+hid terms."""
    gen = torch.Generator().manual_seed(0)
    student, teacher, mask = make_inputs(a, device, gen)
    K = a.domains
    cfg = GraphConfig(dropout=0.0)
    fused = RelationalDistillLoss(a.student_hidden, a.teacher_hidden, a.student_layers, a.teacher_layers, K, cfg).to(device)
    loop = ReferenceDistillLoss(a.student_hidden, a.teacher_hidden, a.student_layers, a.teacher_layers, K, cfg, params=fused.params).to(device)
    step = a.teacher_layers // a.student_layers
    t_att = [teacher.attentions[(i + 1) * step - 1] for i in range(a.student_layers)]
    t_hid = [teacher.embeddings] + [teacher.hidden_states[(i + 1) * step - 1] for i in range(a.student_layers)]
    # projected student states stand-ins for the terms-only benchmark (leaves, so grads stop here)
    s_proj = [torch.randn(x.shape, generator=gen).to(device).requires_grad_(True) for x in t_hid]
    s_att = list(student.attentions)
    terms_loop, terms_fused = term_cases(s_att, t_att, s_proj, t_hid, mask, K, a.batch)

    def full(loss):
        def run():
            out = loss(student, teacher, mask, K)
            out.total.backward()
        return run

    def clear():
        for x in [*s_att, *s_proj, student.embeddings, *student.hidden_states, student.logits, *fused.parameters()]:
            x.grad = None

    cases = {"att+hid terms, loop": terms_loop, "att+hid terms, fused": terms_fused(),
             "full loss, loop": full(loop), "full loss, fused": full(fused)}
    if a.compiled_terms and device.type == "cpu":  # distill.compiled_terms: the terms through torch.compile
        fused_c = RelationalDistillLoss(a.student_hidden, a.teacher_hidden, a.student_layers, a.teacher_layers, K, cfg,
                                        params=fused.params, compiled_terms=True).to(device)
        cases["att+hid terms, fused compiled"] = terms_fused(compiled=True)
        cases["full loss, fused compiled terms"] = full(fused_c)
    if a.compile:
        compiled = torch.compile(fused)
        cases["full loss, fused+compile"] = full(compiled)
    size = lambda xs: sum(x.numel() * x.element_size() for x in xs)  # noqa: E731
    big_s, big_t = size(s_att) + size(s_proj), size(t_att) + size(t_hid)
    floor_bytes = 2 * (big_s + big_t) + big_s  # read s,t fwd + bwd, write grad(s)
    return cases, clear, floor_bytes


def print_report(a, device: torch.device, t: dict[str, float], bw: float, floor_bytes: int) -> None:
    floor_ms = floor_bytes / bw * 1e3
    print(f"device {device}, threads {a.threads}, K={a.domains} B={a.batch} T={a.seq}, student {a.student_layers}x{a.student_hidden}, "
          f"teacher {a.teacher_layers}x{a.teacher_hidden}, heads {a.heads}")
    print(f"memory bandwidth (copy): {bw / 1e9:.1f} GB/s; att+hid floor: {floor_bytes / 1e6:.0f} MB -> {floor_ms:.1f} ms")
    print(f"{'case':<24}{'fwd+bwd ms':>12}{'x floor':>10}")
    for name, ms in t.items():
        extra = f"{ms / floor_ms:>10.2f}" if name.startswith("att") else f"{'':>10}"
        print(f"{name:<24}{ms:>12.1f}{extra}")
    print(f"terms_speedup_vs_loop: {t['att+hid terms, loop'] / t['att+hid terms, fused']:.2f}")
    if "full loss, fused compiled terms" in t:
        print(f"compiled_terms_speedup_vs_loop: {t['full loss, loop'] / t['full loss, fused compiled terms']:.2f}")
    print(f"fused_speedup_vs_loop: {t['full loss, loop'] / t['full loss, fused']:.2f}")


def main(argv: list[str] | None = None) -> None:
    a = parse_args(argv)
    device = torch.device(a.device)
    torch.set_num_threads(a.threads)
    cases, clear, floor_bytes = build_cases(a, device)
    t = timed_interleaved({k: (lambda fn=fn: (clear(), fn())) for k, fn in cases.items()}, device, a.repeats)
    bw = bandwidth(device, a.repeats)
    print_report(a, device, t, bw, floor_bytes)


if __name__ == "__main__":
    main()
