"""Load the CCD dataset pickles without letting them run code.

A pickle can name any importable callable and call it while loading
(`os.system`, `subprocess.Popen`, ...). The CCD files only need a handful of
harmless constructors, so this unpickler resolves exactly those and refuses
every other name before anything is called:

- `builtins.dict`, `builtins.list`, `builtins.int`
- `collections.defaultdict` (the `train_dict` / `valid_dict` / `test_dict`)
- for Yelp's `num_base_block_users/items` (numpy int64 scalars):
  `numpy.core.multiarray.scalar` / `numpy._core.multiarray.scalar` and
  `numpy.dtype`, wrapped so that only plain numeric dtypes are accepted
  (no object dtype, which would let a scalar smuggle an arbitrary object).

Every failure, refused name, truncation or corruption alike, becomes an
InputError naming the file.
"""
from __future__ import annotations

import _compat_pickle
import collections
import io
import pickle
from pathlib import Path

import numpy as np

from ..errors import InputError

try:  # numpy >= 2: the real location; `numpy.core` is a deprecated alias
    from numpy._core.multiarray import scalar as _np_scalar
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core.multiarray import scalar as _np_scalar

_NUMERIC_KINDS = "biuf"


class RefusedGlobal(pickle.UnpicklingError):
    """The pickle names a callable outside the allow-list."""

    def __init__(self, module: str, name: str):
        super().__init__(f"{module}.{name}")
        self.qualname = f"{module}.{name}"


def _numeric_dtype(spec, align=False, copy=False):
    """`numpy.dtype` restricted to bool / int / uint / float."""
    if not isinstance(spec, str):
        raise pickle.UnpicklingError(f"numpy.dtype spec must be a string, got {type(spec).__name__}")
    dtype = np.dtype(spec)
    if dtype.kind not in _NUMERIC_KINDS:
        raise pickle.UnpicklingError(f"numpy dtype {spec!r} is not a plain numeric dtype")
    return np.dtype(spec, bool(align), bool(copy))


def _numeric_scalar(dtype, data=None):
    """numpy's scalar reconstructor, restricted to numeric dtypes and raw bytes."""
    if not isinstance(dtype, np.dtype) or dtype.kind not in _NUMERIC_KINDS:
        raise pickle.UnpicklingError(f"numpy scalar of dtype {dtype!r} is not allowed")
    if not isinstance(data, bytes) or len(data) != dtype.itemsize:
        raise pickle.UnpicklingError("numpy scalar payload must be raw bytes of the dtype's size")
    return _np_scalar(dtype, data)


ALLOWED = {
    ("builtins", "dict"): dict,
    ("builtins", "list"): list,
    ("builtins", "int"): int,
    ("collections", "defaultdict"): collections.defaultdict,
    ("numpy.core.multiarray", "scalar"): _numeric_scalar,
    ("numpy._core.multiarray", "scalar"): _numeric_scalar,
    ("numpy", "dtype"): _numeric_dtype,
}


class SafeUnpickler(pickle.Unpickler):
    """An Unpickler that resolves only the names in ALLOWED."""

    def find_class(self, module, name):
        # Protocol 0-2 pickles use Python 2 names (`__builtin__.list`); map them
        # the way pickle itself would, then check the allow-list.
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        elif module in _compat_pickle.IMPORT_MAPPING:
            module = _compat_pickle.IMPORT_MAPPING[module]
        try:
            return ALLOWED[(module, name)]
        except KeyError:
            raise RefusedGlobal(module, name) from None

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("persistent ids are not allowed")


def safe_loads(data: bytes, path="<bytes>"):
    """Unpickle `data` with the allow-list; `path` is used in error messages."""
    try:
        return SafeUnpickler(io.BytesIO(data)).load()
    except RefusedGlobal as exc:
        allowed = ", ".join(sorted({f"{m}.{n}" for m, n in ALLOWED}))
        raise InputError(
            f"refused to unpickle {exc.qualname}: only {allowed} are allowed "
            "(nothing was executed)",
            path,
        ) from None
    except EOFError:
        raise InputError("truncated pickle (ran out of data before the STOP opcode)", path) from None
    except MemoryError:
        raise InputError("corrupt pickle (implausible sizes)", path) from None
    except Exception as exc:  # UnpicklingError, ValueError, TypeError, ... from corrupt data
        raise InputError(f"corrupt or unsupported pickle: {type(exc).__name__}: {exc}", path) from None


def safe_load(path):
    """Unpickle the file at `path` with the allow-list."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise InputError("file not found (expected a pickle file)", path) from None
    except IsADirectoryError:
        raise InputError("is a directory (expected a pickle file)", path) from None
    return safe_loads(data, path)
