"""matplotlib figures: a pickle (for a usable figure on load) plus PNG bytes.

``Tree("figure", (pickle_id | None, png_id), {"type", "size", "dpi"})``. With
``allow_pickle`` off only the PNG is stored, and loading any figure then
gives a new figure showing that image: still a usable figure, without
unpickling anything. Figure ids are only as deterministic as matplotlib's
pickles and PNG output for the same drawing.
"""

from __future__ import annotations

import io
import struct

from ...config import get_config
from ...errors import CorruptObject, SerializationError
from ...objects import Blob, Chunked, ObjectId, Tree
from .. import registry
from .._encode import Encoder, loaded, type_name
from .pickle import pickle_value

__all__ = ["figure_png"]


def _find(enc: Encoder, v) -> ObjectId | None:
    mfig = loaded("matplotlib.figure")
    if mfig is None or not isinstance(v, mfig.Figure):
        return None
    buf = io.BytesIO()
    v.savefig(buf, format="png")
    png = enc.payload("png", {"type": "image/png"}, buf.getbuffer())
    pickled = pickle_value(enc, v, warn=False, check=False) if get_config().allow_pickle else None
    w, h = (float(x) for x in v.get_size_inches())
    meta = {"type": type_name(type(v)), "size": [w, h], "dpi": float(v.dpi)}
    return enc.emit(Tree("figure", (pickled, png), meta))


def _decode(dec, tree):
    pickled, png = tree.entries
    if pickled is not None and get_config().allow_pickle:
        # Figure.__setstate__ gives it a canvas (and a pyplot manager if it had one).
        return dec.load(pickled)
    oid = dec.oid
    return _figure_from_png(oid, dec.payload(png).tobytes(), tree.meta)


# A figure's PNG is decoded to RGBA floats: refuse sizes no saved figure has
# before allocating them (a crafted header can claim 2**31 x 2**31 pixels).
_MAX_PIXELS = 1 << 26


def _figure_from_png(oid, png: bytes, meta: dict):
    import matplotlib.image as mimage

    if len(png) < 24 or png[12:16] != b"IHDR":
        raise CorruptObject(f"object {oid.hex()}: the stored figure's PNG has no header")
    width, height = struct.unpack(">II", png[16:24])
    if width * height > _MAX_PIXELS:
        raise CorruptObject(f"object {oid.hex()}: the stored figure's PNG claims {width}x{height} pixels")
    from matplotlib.figure import Figure

    img = mimage.imread(io.BytesIO(png), format="png")
    size = meta.get("size") or [img.shape[1] / 100, img.shape[0] / 100]
    fig = Figure(figsize=size, dpi=meta.get("dpi", 100))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.imshow(img)
    ax.set_axis_off()
    return fig


def figure_png(store, oid) -> bytes:
    """The PNG bytes of a stored matplotlib figure.

    Args:
        store: a :class:`terra.store.Store`.
        oid: the figure's id.

    Returns:
        The PNG file contents.

    Raises:
        SerializationError: ``oid`` is not a stored figure.
    """
    from .._decode import as_id

    oid = as_id(store, oid)
    obj = store.get(oid)
    if isinstance(obj, Tree) and obj.type == "figure":
        return store.read_payload(obj.entries[1])[1].tobytes()
    if isinstance(obj, (Blob, Chunked)) and obj.codec == "png":
        return store.read_payload(oid)[1].tobytes()
    raise SerializationError(f"object {oid.hex()} is not a stored figure")


def _summary(store, tree) -> dict:
    return {"type": tree.meta.get("type", "matplotlib.figure.Figure"), "size": tree.meta.get("size"),
            "dpi": tree.meta.get("dpi")}


def _decode_png(dec, blob, payload) -> bytes:
    return payload.tobytes()


PROVIDES = registry.Codec(finder=_find, blobs={"png": _decode_png}, trees={"figure": _decode},
                          summaries={"tree:figure": _summary})
