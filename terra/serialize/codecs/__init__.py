"""Codec modules; importing this package registers them, in dispatch order.

Finders run in registration order: user codecs, ``__terra_write__`` objects,
numpy, pandas, torch, matplotlib, dataclasses/enums/namedtuples, and pickle last.
"""

from .. import _files, _user  # noqa: F401  (user codecs and __terra_write__ first)
from . import builtins as _builtins  # noqa: F401
from . import numpy as _numpy  # noqa: F401
from . import pandas as _pandas  # noqa: F401
from . import torch as _torch  # noqa: F401
from . import figure as _figure  # noqa: F401
from . import pickle as _pickle
from .._encode import FINDERS

FINDERS.remove(_builtins._find_classes)  # dataclasses etc. after the library types
FINDERS.append(_builtins._find_classes)
FINDERS.append(_pickle.fallback)
