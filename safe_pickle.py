"""Reading sample pickles without running code: the one place that opens a pickle.

A plain `pickle.load` calls whatever a file names, so a hostile .pkl can run a command as it is read. Here
the unpickler resolves only the names in ALLOWED (numpy arrays, numpy dtypes and scalars, and plain Python
containers); anything else is refused with a line naming it. Plain types (dict, list, tuple, str, bytes,
int, float, bool, None) need no name and always load.

A small file can still ask for a lot: numpy's own pickle format can make an object array from a list
that is too short (numpy then crashes the process), a dtype whose state claims it holds Python
objects, or an array of any shape; memo references can repeat one frame millions of times, or nest
lists without end. So numpy arrays and dtypes are only built as numpy itself writes them, of
numbers, booleans or strings (ARRAY_KINDS; never objects, never structured), and what a pickle built
is measured before it is returned: at most MAX_DEPTH containers deep and MAX_VALUES values, a shared
object counted at each reference (what numpy.asarray or a repr would expand it to). Files above
MAX_PICKLE_BYTES are not read. docs/safety.md lists what is checked.

    from safe_pickle import load_pickle
    sample = load_pickle("data/x/all/G01/user01_G01_R01.pkl")
"""
from __future__ import annotations

import _compat_pickle
import io
import itertools
import os
import pickle
import stat

import numpy as np

from util import Expansion, expanded_size

ALLOWED = {
    # numpy arrays, dtypes and scalars (numpy 1.x and 2.x module names)
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),  # pickle protocol 5
    # plain containers that older pickle protocols spell by name
    ("builtins", "set"), ("builtins", "frozenset"), ("builtins", "complex"), ("collections", "OrderedDict"),
    ("_codecs", "encode"),  # bytes in protocol-2 pickles (numpy array data among them)
}
MAX_PICKLE_BYTES = 256 * 2**20  # larger files are refused unread (a 20-min 90-point clip: ~60 MB)
MAX_VALUES = 10_000_000   # numbers, items and keys a pickle builds, a shared object at each use
MAX_DEPTH = 32            # containers inside containers (a sample dict needs 4)
ARRAY_KINDS = "biufcSU"   # numpy dtypes that load: bool, int, uint, float, complex, bytes, str
MAX_ITEMSIZE = 2**16      # bytes per array element (a long fixed-width string)


class UnsafePickleError(pickle.UnpicklingError):
    """The pickle is unreadable, names something outside ALLOWED, or builds more than the limits
    allow."""


# ----------------------------------------------------------------------------------- numpy, checked
def _checked_dtype(dtype: np.dtype) -> np.dtype:
    """A dtype of ARRAY_KINDS exactly as numpy makes it from its type string (no objects, fields,
    subarrays, or flags and sizes changed by a pickled state)."""
    canonical = np.dtype(dtype.str) if dtype.kind in ARRAY_KINDS else None
    if (canonical is None or dtype.fields is not None or dtype.subdtype is not None
            or (dtype.flags, dtype.itemsize) != (canonical.flags, canonical.itemsize)
            or dtype.itemsize > MAX_ITEMSIZE):
        raise UnsafePickleError(f"refused numpy dtype {str(dtype)[:40]}: sample arrays hold "
                                "numbers, booleans or strings (no objects, no structured or "
                                "oversized types)")
    return dtype


def _dtype(spec, align=False, copy=False):
    """numpy.dtype(...) as a pickle calls it; always a private copy, so that a pickled state (BUILD)
    cannot change numpy's own float32."""
    return _checked_dtype(np.dtype(spec, bool(align), True))


class _NdarrayName:
    """numpy.ndarray as numpy's pickles name it: the class passed to _reconstruct. Calling it (an
    array of any shape, or on any buffer) is not something numpy's pickles do, and is refused."""

    def __new__(cls, *args, **kwargs):
        raise UnsafePickleError("refused a call of numpy.ndarray: sample pickles may hold arrays "
                                "only as numpy writes them")


def _reconstruct(subtype, shape, dtype):
    """numpy's _reconstruct(ndarray, (0,), b'b'): an empty array that the pickle's BUILD then
    fills."""
    if subtype is not _NdarrayName:
        raise UnsafePickleError("refused _reconstruct of anything but numpy.ndarray")
    return np.empty(_checked_shape(shape), dtype=_checked_dtype(np.dtype(dtype)))


def _checked_shape(shape) -> tuple:
    if not (isinstance(shape, tuple) and len(shape) <= 32
            and all(type(n) is int and n >= 0 for n in shape)):
        raise UnsafePickleError(f"refused an array shape {str(shape)[:40]}")
    size = 1
    for n in shape:
        size *= n
    if size > MAX_VALUES:
        raise UnsafePickleError(f"refused an array of {size:,} values (more than {MAX_VALUES:,})")
    return shape


def _array_state(state) -> None:
    """ndarray.__setstate__'s (version, shape, dtype, fortran, data): numpy's own layout, with data
    bytes that fill the shape exactly (numpy reads past a short buffer of objects)."""
    if isinstance(state, tuple) and len(state) == 5 and type(state[0]) is int:
        state = state[1:]
    if not (isinstance(state, tuple) and len(state) == 4 and isinstance(state[1], np.dtype)
            and isinstance(state[2], bool) and isinstance(state[3], (bytes, bytearray))):
        raise UnsafePickleError("refused an array state that numpy's pickles do not write")
    shape, dtype, _, data = state
    size = 1
    for n in _checked_shape(shape):
        size *= n
    if len(data) != size * _checked_dtype(dtype).itemsize:
        raise UnsafePickleError(f"refused an array of shape {shape} with {len(data)} bytes of data")


def _dtype_state(dtype: np.dtype, state) -> None:
    """dtype.__setstate__'s 8 (or 9) fields: tried on a copy first, the result must still be a plain
    dtype."""
    if not (isinstance(state, tuple) and len(state) in (8, 9) and all(v is None for v in state[2:5])
            and all(type(v) is int for v in (state[0], *state[5:8])) and isinstance(state[1], str)
            and state[8:] in ((), (None,))):
        raise UnsafePickleError("refused a dtype state that numpy's pickles do not write")
    trial = np.dtype(dtype, copy=True)
    trial.__setstate__(state)
    _checked_dtype(trial)


def _latin1(text, encoding="utf-8"):
    """_codecs.encode as pickle protocol 2 writes bytes: (text, 'latin1'); other codecs are refused
    (chained, 'hex' would double a value at each step)."""
    if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
        raise UnsafePickleError(f"refused _codecs.encode with codec {str(encoding)[:20]!r}")
    return text.encode("latin-1")


STAND_INS = {  # names a pickle may use, resolved to the checked versions above
    ("numpy", "ndarray"): _NdarrayName, ("numpy", "dtype"): _dtype,
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("_codecs", "encode"): _latin1,
}


# ------------------------------------------------------------------------------------ the unpickler
class _RestrictedUnpickler(pickle._Unpickler):
    """The pure-Python unpickler: its BUILD step can be checked before numpy sees a state."""

    dispatch = dict(pickle._Unpickler.dispatch)

    def find_class(self, module: str, name: str):
        # Python 2 names of protocols 0-2 ("__builtin__.set"), mapped as pickle maps them; what is checked is
        # exactly what is imported
        module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        if (module, name) not in ALLOWED:
            raise UnsafePickleError(f"refused to load {module}.{name}: sample pickles may hold only numpy "
                                    "arrays and plain Python values (docs/safety.md)")
        return STAND_INS.get((module, name)) or super().find_class(module, name)

    def persistent_load(self, pid):
        raise UnsafePickleError("refused a persistent id: sample pickles may hold only numpy arrays and "
                                "plain Python values")

    def load_build(self):
        state, inst = self.stack[-1], self.stack[-2]
        if isinstance(inst, np.dtype):
            _dtype_state(inst, state)
        elif isinstance(inst, np.ndarray):
            _array_state(state)
        super().load_build()

    dispatch[pickle.BUILD[0]] = load_build


# ------------------------------------------------------------------------------- size of the result
def _items(value):
    """An iterator over what a container holds (dict: keys and values), None for a leaf."""
    if isinstance(value, dict):
        return itertools.chain(value.keys(), value.values())
    if isinstance(value, (list, tuple, set, frozenset)):
        return iter(value)
    return None


def check_size(root) -> None:
    """Refuse a value nested deeper than MAX_DEPTH, holding itself, or expanding to more than
    MAX_VALUES values with every shared object counted at each reference (util.expanded_size: the
    check costs no more than the pickle's own length)."""
    leaf_size = lambda item: item.size if isinstance(item, np.ndarray) else 1  # noqa: E731
    try:
        expanded_size(root, _items, leaf_size, MAX_VALUES, MAX_DEPTH)
    except Expansion as e:
        raise UnsafePickleError({
            "itself": "refused a container that holds itself",
            "depth": f"refused values nested more than {MAX_DEPTH} containers deep",
            "size": f"refused: the pickle expands to more than {MAX_VALUES:,} values (a shared object "
                    "counts at every reference)"}[e.reason]) from None


# ------------------------------------------------------------------------------------- entry points
def loads(data: bytes):
    """Unpickle bytes with the restricted unpickler; any failure is an UnsafePickleError with one line."""
    try:
        value = _RestrictedUnpickler(io.BytesIO(data)).load()
        check_size(value)
        return value
    except UnsafePickleError:
        raise
    except Exception as e:  # truncated/corrupt data raises many types (EOFError, ValueError, KeyError, ...)
        raise UnsafePickleError(f"{type(e).__name__}: {str(e)[:200]}") from None


def load_pickle(path):
    """Read a pickle file safely; raises UnsafePickleError (the path is the caller's to add),
    OSError when the file cannot be read."""
    with open(path, "rb", opener=_open_regular) as f:
        data = f.read(MAX_PICKLE_BYTES + 1)
    if len(data) > MAX_PICKLE_BYTES:
        raise UnsafePickleError(f"refused a file of more than {MAX_PICKLE_BYTES // 2**20} MiB")
    return loads(data)


def _open_regular(path, flags):
    """os.open that refuses what is not a regular file (a FIFO would block the reader forever)."""
    fd = os.open(path, flags | os.O_NONBLOCK)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise UnsafePickleError("not a regular file")
    return fd
