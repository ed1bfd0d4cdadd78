"""torch tensors via safetensors: ``Blob("torch", {"dtype", "shape", "device"...}, safetensors)``.

torch is never imported here: a tensor can only exist if the program already
imported torch. A state dict is a dict (or OrderedDict) of tensors and is
stored as a Tree of tensor Blobs, so unchanged tensors are shared between
checkpoints. ``nn.Module`` and other torch objects go to the pickle fallback.
Sparse, quantized and other non-strided tensors also go to pickle.
"""

from __future__ import annotations

from ...objects import ObjectId
from .. import registry
from .._encode import Encoder, loaded

CODEC = "torch"
_KEY = "tensor"


def _find(enc: Encoder, v) -> ObjectId | None:
    torch = loaded("torch")
    if torch is None or type(v) not in (torch.Tensor, torch.nn.Parameter):
        return None
    if v.layout != torch.strided or v.is_quantized or v.is_meta:
        return None
    from safetensors.torch import save

    t = v.detach()
    if t.device.type != "cpu":
        t = t.cpu()
    # clone(): safetensors refuses tensors that share storage with others (views).
    t = t.contiguous().clone() if t.storage_offset() or not t.is_contiguous() else t
    meta = {"type": "torch.Parameter" if type(v) is torch.nn.Parameter else "torch.Tensor",
            "dtype": str(v.dtype).replace("torch.", ""), "shape": list(v.shape),
            "device": str(v.device), "requires_grad": bool(v.requires_grad)}
    return enc.payload(CODEC, meta, save({_KEY: t}))


def _decode(dec, blob, payload):
    import torch
    from safetensors.torch import load

    t = load(payload.tobytes())[_KEY]
    device = blob.meta.get("device", "cpu")
    if device != "cpu":
        try:
            t = t.to(device)
        except (RuntimeError, AssertionError):  # that device is not available here
            pass
    if blob.meta.get("type") == "torch.Parameter":
        return torch.nn.Parameter(t, requires_grad=blob.meta.get("requires_grad", True))
    if blob.meta.get("requires_grad"):
        t.requires_grad_(True)
    return t


def _summary(blob) -> dict:
    m = blob.meta
    return {"type": m.get("type", "torch.Tensor"), "shape": m.get("shape"), "dtype": m.get("dtype"),
            "device": m.get("device")}


PROVIDES = registry.Codec(finder=_find, blobs={CODEC: _decode}, summaries={CODEC: _summary})
