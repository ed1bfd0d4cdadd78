"""Codec modules and the one table that installs them, in dispatch order.

Each module only declares what it provides (``PROVIDES``, a
:class:`~terra.serialize.registry.Codec`); importing it, or this package,
registers nothing: the encoder installs :data:`TABLE` on first use.
Finders are tried in :data:`TABLE` order for types without an exact encoder:
``__terra_write__`` objects and user codecs first, then numpy, pandas, torch,
matplotlib, dataclasses/enums/namedtuples (with the builtin exact types), and
pickle last, which accepts anything.
"""

from .. import _files, _user
from . import builtins, figure, numpy, pandas, pickle, torch

TABLE = (
    _files.PROVIDES,
    _user.PROVIDES,
    numpy.PROVIDES,
    pandas.PROVIDES,
    torch.PROVIDES,
    figure.PROVIDES,
    builtins.PROVIDES,
    pickle.PROVIDES,
)
