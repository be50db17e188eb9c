"""Reading sample pickles without running code: the one place that opens a pickle.

A plain `pickle.load` calls whatever a file names, so a hostile .pkl can run a command as it is read. Here
the unpickler resolves only the names in ALLOWED (numpy arrays, numpy dtypes and scalars, and plain Python
containers); anything else is refused with a line naming it. Plain types (dict, list, tuple, str, bytes,
int, float, bool, None) need no name and always load. docs/safety.md lists what is checked.

    from safe_pickle import load_pickle
    sample = load_pickle("data/x/all/G01/user01_G01_R01.pkl")
"""
from __future__ import annotations

import _compat_pickle
import io
import pickle
from pathlib import Path

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


class UnsafePickleError(pickle.UnpicklingError):
    """The pickle is unreadable or names something outside ALLOWED."""


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        # Python 2 names of protocols 0-2 ("__builtin__.set"), mapped as pickle maps them; what is checked is
        # exactly what is imported
        module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        if (module, name) not in ALLOWED:
            raise UnsafePickleError(f"refused to load {module}.{name}: sample pickles may hold only numpy "
                                    "arrays and plain Python values (docs/safety.md)")
        return super().find_class(module, name)

    def persistent_load(self, pid):
        raise UnsafePickleError("refused a persistent id: sample pickles may hold only numpy arrays and "
                                "plain Python values")


def loads(data: bytes):
    """Unpickle bytes with the restricted unpickler; any failure is an UnsafePickleError with one line."""
    try:
        return _RestrictedUnpickler(io.BytesIO(data)).load()
    except UnsafePickleError:
        raise
    except Exception as e:  # truncated/corrupt data raises many types (EOFError, ValueError, KeyError, ...)
        raise UnsafePickleError(f"{type(e).__name__}: {e}") from None


def load_pickle(path):
    """Read a pickle file safely; raises UnsafePickleError (the path is the caller's to add)."""
    return loads(Path(path).read_bytes())
