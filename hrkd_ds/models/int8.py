"""int8 students: post-training dynamic quantization of every nn.Linear, saved as plain tensors.

Why `torch.ao.quantization.quantize_dynamic` (PyTorch's eager dynamic quantization): on a CPU it
runs the fbgemm/x86 int8 GEMM kernels with no compiler and no calibration data, about 3x the
throughput of an fp32 linear on this project's 2-core machine. torch 2.13 marks `torch.ao.quantization`
deprecated in favour of torchao's `quantize_`; torchao's int8 dynamic-activation config without
`torch.compile` ran slower than the fp32 layer on the same CPU, so the kernels that help are
still these. The deprecation warning is silenced here only.

Weights are per-output-channel int8 (symmetric), activations quantized per batch at run time.
Why a file of our own (`int8_weights.safetensors`): a quantized module keeps its weight packed for
the kernel, which neither safetensors nor `save_pretrained` can write. We store each linear's
int8 values, scales, zero points and fp32 bias, and everything else as the fp32 tensors; loading
rebuilds the same packed modules, so an int8 export predicts exactly what the in-memory
quantization predicted. The name is not `model.safetensors` on purpose: a plain Hugging Face
loader then refuses the directory instead of loading random linears.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear

INT8_WEIGHTS = "int8_weights.safetensors"
_SUFFIXES = ("weight_int8", "weight_scale", "weight_zero_point", "bias")


def quantize_linears(model: nn.Module) -> nn.Module:
    """A copy of `model` (eval mode) whose nn.Linear layers are dynamic int8 ones."""
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        return quantize_dynamic(model.eval(), {nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8, inplace=False)


def _dynamic_linears(model: nn.Module) -> dict[str, DynamicLinear]:
    return {name: m for name, m in model.named_modules() if isinstance(m, DynamicLinear)}


def int8_tensors(qmodel: nn.Module) -> dict[str, torch.Tensor]:
    """Every tensor of a quantized model as plain (safetensors-writable) tensors."""
    linears = _dynamic_linears(qmodel)
    out: dict[str, torch.Tensor] = {}
    for name, mod in linears.items():
        w, b = mod._weight_bias()
        out[f"{name}.weight_int8"] = w.int_repr().contiguous()
        out[f"{name}.weight_scale"] = w.q_per_channel_scales().contiguous()
        out[f"{name}.weight_zero_point"] = w.q_per_channel_zero_points().to(torch.int8).contiguous()  # in int8 range
        if b is not None:
            out[f"{name}.bias"] = b.detach().contiguous()
    inside = tuple(f"{n}." for n in linears)
    for key, t in qmodel.state_dict().items():
        if isinstance(t, torch.Tensor) and not key.startswith(inside):
            out[key] = t.detach().contiguous()
    return _untie(out)


def _untie(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """safetensors refuses tensors sharing memory (tied embeddings): store a copy of each repeat."""
    seen: set[int] = set()
    out = {}
    for key, t in tensors.items():
        ptr = t.data_ptr()
        out[key] = t.clone() if ptr in seen and t.numel() else t
        seen.add(ptr)
    return out


def save_int8(qmodel: nn.Module, directory: str | Path) -> Path:
    path = Path(directory) / INT8_WEIGHTS
    save_file(int8_tensors(qmodel), str(path), metadata={"format": "pt", "hrkd_precision": "int8"})
    return path


def load_int8_into(model: nn.Module, directory: str | Path) -> nn.Module:
    """Swap `model`'s nn.Linear layers for dynamic int8 ones filled from `directory`; the other
    tensors are loaded as saved. Raises KeyError/ValueError naming the first tensor that does not fit."""
    tensors = load_file(str(Path(directory) / INT8_WEIGHTS))
    linear_names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    inside = tuple(f"{n}." for n in linear_names)
    rest = {k: v for k, v in tensors.items() if not k.startswith(inside)}
    missing, unexpected = model.load_state_dict(rest, strict=False)  # before the swap: plain modules only
    missing = [k for k in missing if not k.startswith(inside)]
    if missing or unexpected:
        raise KeyError(f"{INT8_WEIGHTS}: missing {missing[:3]}, unexpected {unexpected[:3]}")
    for name in linear_names:
        _swap(model, name, tensors)
    return model.eval()


def _swap(model: nn.Module, name: str, tensors: dict[str, torch.Tensor]) -> None:
    old = model.get_submodule(name)
    q = tensors[f"{name}.weight_int8"]
    if tuple(q.shape) != (old.out_features, old.in_features):
        raise ValueError(f"{INT8_WEIGHTS}: {name} is {list(q.shape)}, config.json says {[old.out_features, old.in_features]}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # quantized-tensor deprecation notice
        weight = torch._make_per_channel_quantized_tensor(q, tensors[f"{name}.weight_scale"],
                                                          tensors[f"{name}.weight_zero_point"].long(), 0)
    new = DynamicLinear(old.in_features, old.out_features, bias_=f"{name}.bias" in tensors, dtype=torch.qint8)
    new.set_weight_bias(weight, tensors.get(f"{name}.bias"))
    parent, _, attr = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, attr, new)
