"""Micro-benchmark of the masked squared-error sums (forward + backward) on CUDA, by variant.

Paper shapes: K=5 domains x B examples (B=8 and 32), T=128, 4 attention layers (N, 12, T, T)
with a (N, 1, T, T) pair mask, and 5 hidden layers (N, T, 768) with a (N, T, 1) token mask.
Each variant computes sum(W * sums_att) + sum(W' * sums_hid) and backpropagates to s and t.

Variants: the original bmm path; torch paths with other per-domain reductions; the Triton
kernels of hrkd_ds.distill.triton_masked_sums at several launch configs; the module's own torch fallback;
torch.compile of a pure function. Every variant is first checked against a float64 reference
(fresh random data with random right padding, finfo.min at padded keys like our attention);
then all are timed with CUDA events, interleaved round-robin, median of --repeats.

Floor = (read s, t forward + read s, t backward + write grad(s)) / measured copy bandwidth.
"""

from __future__ import annotations

import argparse
import statistics

import torch

from hrkd_ds.distill import triton_masked_sums as TK
from hrkd_ds.distill.masked_sums import masked_squared_error_sums
from hrkd_ds.distill.terms import pair_mask, token_mask


class OrigSums(torch.autograd.Function):
    """The original implementation (bmm reduction), or a torch variant with another reduction."""

    @staticmethod
    def forward(ctx, mask, K, reduce, *pairs):
        ctx.K = K
        ctx.save_for_backward(mask, *pairs)
        students, teachers = pairs[0::2], pairs[1::2]
        rows, buf = [], None
        sums = students[0].new_empty(len(students), K)
        for i, (s, t) in enumerate(zip(students, teachers)):
            if buf is None or buf.shape != s.shape:
                buf = torch.empty_like(s)
            torch.sub(s, t, out=buf)
            buf.mul_(mask)
            if reduce == "bmm":
                flat = buf.view(K, 1, -1)
                sums[i] = torch.bmm(flat, flat.transpose(1, 2)).view(K)
                continue
            flat = buf.view(K, -1)
            if reduce == "vecdot":
                rows.append(torch.linalg.vecdot(flat, flat))
            elif reduce == "mulsum":
                rows.append((flat * flat).sum(1))
            elif reduce == "powsum":
                rows.append((flat**2).sum(1))
        return sums if reduce == "bmm" else torch.stack(rows)

    @staticmethod
    def backward(ctx, grad_sums):
        mask, *pairs = ctx.saved_tensors
        grad_sums = grad_sums.contiguous()
        K, n = ctx.K, pairs[0].shape[0]
        grads = []
        for i in range(len(pairs) // 2):
            s, t = pairs[2 * i], pairs[2 * i + 1]
            need_s, need_t = ctx.needs_input_grad[3 + 2 * i], ctx.needs_input_grad[4 + 2 * i]
            scale = (2.0 * grad_sums[i]).repeat_interleave(n // K)
            weight = mask * scale.reshape(n, *([1] * (mask.dim() - 1)))
            g = torch.sub(s, t)
            g.mul_(weight)
            grads += [g if need_s else None, g.neg() if need_t else None]
        return (None, None, None, *grads)


def pure(ss, ts, m, K: int):
    return torch.stack([((s - t) * m).view(K, -1).pow(2).sum(1) for s, t in zip(ss, ts)])


def make(K, B, T, h, H, La, Lh, seed, device, t_grad=False):
    gen = torch.Generator(device="cpu").manual_seed(seed)
    N = K * B
    lens = torch.randint(max(1, T // 4), T + 1, (N,), generator=gen)
    am = (torch.arange(T)[None] < lens[:, None]).long().to(device)
    neg = torch.finfo(torch.float32).min
    keypad = (1 - am[:, None, None, :].float()) * neg

    def r(*shape):
        return torch.randn(*shape, generator=gen).to(device)

    sa = [(r(N, h, T, T) + keypad).requires_grad_(True) for _ in range(La)]
    ta = [(r(N, h, T, T) + keypad).requires_grad_(t_grad) for _ in range(La)]
    sh = [r(N, T, H).requires_grad_(True) for _ in range(Lh)]
    th = [r(N, T, H).requires_grad_(t_grad) for _ in range(Lh)]
    wa, wh = r(La, K), r(Lh, K)
    return dict(K=K, sa=sa, ta=ta, sh=sh, th=th, pm=pair_mask(am, torch.float32), tm=token_mask(am, torch.float32), wa=wa, wh=wh)


def module(launch=TK.DEFAULT_LAUNCH):
    """The project's function with an explicit launch config (it travels to backward with ctx)."""
    def run(d):
        return (masked_squared_error_sums(d["sa"], d["ta"], d["pm"], d["K"], launch),
                masked_squared_error_sums(d["sh"], d["th"], d["tm"], d["K"], launch))
    return run


def variants(compile_: bool):
    def orig(reduce):
        def f(d):
            K = d["K"]
            a = OrigSums.apply(d["pm"], K, reduce, *[x for st in zip(d["sa"], d["ta"]) for x in st])
            b = OrigSums.apply(d["tm"], K, reduce, *[x for st in zip(d["sh"], d["th"]) for x in st])
            return a, b
        return f

    def module_fallback(d):
        old = TK.usable
        TK.usable = lambda *a: False
        try:
            return module()(d)
        finally:
            TK.usable = old

    v = {"current (bmm)": orig("bmm"), "torch vecdot": orig("vecdot"), "torch (f*f).sum(1)": orig("mulsum"),
         "module torch fallback": module_fallback}
    for fb in (4096, 8192):
        v[f"triton per-layer {fb}"] = module(TK.LaunchConfig(fb, fb, one_launch=False))
    for fb in (4096, 8192):
        v[f"triton 1-launch {fb}"] = module(TK.LaunchConfig(fb, fb, one_launch=True))
    if compile_:
        cp = torch.compile(pure, dynamic=False)
        v["torch.compile(pure)"] = lambda d: (cp(d["sa"], d["ta"], d["pm"], d["K"]), cp(d["sh"], d["th"], d["tm"], d["K"]))
    return v


def step(fn, d):
    a, b = fn(d)
    ((a * d["wa"]).sum() + (b * d["wh"]).sum()).backward()


def check(fn, d):
    """Max relative error (norm) of sums and of every gradient vs float64."""
    for x in d["sa"] + d["ta"] + d["sh"] + d["th"]:
        x.grad = None
    a, b = fn(d)
    ((a * d["wa"]).sum() + (b * d["wh"]).sum()).backward()
    K = d["K"]
    errs = []

    def rel(x, r):
        if x is None or not torch.isfinite(x).all():
            return float("inf")
        return ((x.double() - r).norm() / r.norm().clamp_min(1e-300)).item()

    for ss, ts, m, w, got in ((d["sa"], d["ta"], d["pm"], d["wa"], a), (d["sh"], d["th"], d["tm"], d["wh"], b)):
        n = ss[0].shape[0]
        ref = torch.stack([((s.double() - t.double()) * m.double()).reshape(K, -1).pow(2).sum(1) for s, t in zip(ss, ts)])
        errs.append(rel(got, ref))
        for i, (s, t) in enumerate(zip(ss, ts)):
            wt = (2 * w[i].double()).repeat_interleave(n // K).reshape(n, *([1] * (s.dim() - 1)))
            gref = (s.double() - t.double()) * m.double() * wt
            errs.append(rel(s.grad, gref))
            if t.requires_grad:
                errs.append(rel(t.grad, -gref))
    return max(errs)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--batches", default="8,32")
    ap.add_argument("--compile", action="store_true")
    return ap.parse_args(argv)


def check_variants(vs: dict, dev: torch.device) -> list[str]:
    """Each variant against float64 on fresh data: odd shapes (tails, T not a power of 2) and the
    paper's; prints one line per variant, returns the names that failed."""
    seed = 100
    bad = []
    for name, fn in vs.items():
        worst = 0.0
        compiled = name.startswith("torch.compile")  # one shape set: each new one recompiles
        for shp in [(3, 2, 37, 3, 50, 2, 3), (5, 8, 128, 12, 768, 4, 5)][compiled:]:
            for t_grad in (False, True)[: 2 - compiled]:
                seed += 1
                d = make(*shp, seed=seed, device=dev, t_grad=t_grad)
                worst = max(worst, check(fn, d))
                del d
        ok = worst < 1e-5
        print(f"check {name:<24} max rel err {worst:.2e} {'ok' if ok else 'FAIL'}", flush=True)
        if not ok:
            bad.append(name)
    return bad


def copy_bandwidth(dev: torch.device, repeats: int) -> float:
    """Bytes/s of a 256 MiB device copy (read + write), median of CUDA-event timings after 3 warm-ups."""
    src = torch.randn(64 * 2**20, device=dev)
    dst = torch.empty_like(src)
    ts = []
    for i in range(repeats + 3):
        e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        e0.record()
        dst.copy_(src)
        e1.record()
        torch.cuda.synchronize()
        if i >= 3:
            ts.append(e0.elapsed_time(e1))
    return 2 * src.numel() * 4 / (statistics.median(ts) / 1e3)


def time_batch(vs: dict, B: int, bw: float, dev: torch.device, repeats: int) -> list[tuple]:
    """(B, variant, median ms, x floor, (p10, p90)) of every variant at paper shapes with B examples
    per domain, timed round-robin; prints the floor."""
    d = make(5, B, 128, 12, 768, 4, 5, seed=B, device=dev)
    size = lambda xs: sum(x.numel() * x.element_size() for x in xs)  # noqa: E731
    S, T = size(d["sa"]) + size(d["sh"]), size(d["ta"]) + size(d["th"])
    floor_ms = (2 * (S + T) + S) / bw * 1e3
    times = {n: [] for n in vs}
    for i in range(repeats + 3):
        for name, fn in vs.items():
            for x in d["sa"] + d["sh"]:
                x.grad = None
            e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            torch.cuda.synchronize()
            e0.record()
            step(fn, d)
            e1.record()
            torch.cuda.synchronize()
            if i >= 3:
                times[name].append(e0.elapsed_time(e1))
    rows = []
    for name in vs:
        med = statistics.median(times[name])
        spread = (statistics.quantiles(times[name], n=10)[0], statistics.quantiles(times[name], n=10)[-1])
        rows.append((B, name, med, med / floor_ms, spread))
    print(f"B={B}: floor {floor_ms:.3f} ms", flush=True)
    return rows


def main(argv: list[str] | None = None) -> None:
    a = parse_args(argv)
    dev = torch.device("cuda")
    torch.backends.cuda.matmul.allow_tf32 = False
    print(torch.__version__, torch.cuda.get_device_name(), flush=True)
    print("triton kernels available:", TK.kernels() is not None, flush=True)
    vs = variants(a.compile)
    bad = check_variants(vs, dev)
    bw = copy_bandwidth(dev, a.repeats)
    print(f"copy bandwidth {bw / 1e9:.0f} GB/s", flush=True)
    rows = []
    for B in [int(x) for x in a.batches.split(",")]:
        rows += time_batch(vs, B, bw, dev, a.repeats)
        torch.cuda.empty_cache()

    print(f"\n{'B':>3} {'variant':<24}{'ms':>9}{'x floor':>9}   p10-p90 ms")
    for B, name, ms, xf, (lo, hi) in rows:
        print(f"{B:>3} {name:<24}{ms:>9.3f}{xf:>9.2f}   {lo:.3f}-{hi:.3f}")
    if bad:
        print("FAILED checks:", bad)


if __name__ == "__main__":
    main()
