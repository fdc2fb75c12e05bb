"""The C allocator (glibc's malloc) made to keep less memory: ``one_heap()`` at start, ``release_free_memory()``
once a large piece of work is done.

glibc gives each thread that allocates its own heap (an "arena"), and keeps what is freed there: after the first
large free its mmap threshold rises, so later 1 MiB chunks come from the heaps of the threads that allocated
them, and a heap gives memory back only from its top. The pool threads that hash and write an upload's chunks
allocate in theirs, so after one 100 MiB upload a server kept ~6 MB more resident (three thread heaps of 1-2 MB
each) for good, which the 1,000-slow-downloads budget and every unit's memory pay for.

- ``one_heap()`` (``M_ARENA_MAX`` 1): the threads share the main heap. They rarely allocate (hashlib and
  ``os.write`` work on buffers the event loop made), so its lock costs nothing measurable.
- ``release_free_memory()`` (``malloc_trim(0)``, well under a millisecond): the free pages of the heap go back to
  the system. Called once a large piece of work is done (the digest read-back after an upload), not per chunk,
  so transfers keep glibc's fast path.

With both, the same upload leaves +1 MB. Own code through ctypes: the standard library has no binding for
either. Elsewhere than glibc, nothing is done.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Callable

M_ARENA_MAX = -8  # glibc's malloc.h


def _load() -> tuple[Callable[[int], int], Callable[[int, int], int]] | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None)
        trim, mallopt = libc.malloc_trim, libc.mallopt
    except (OSError, AttributeError):  # not glibc
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return trim, mallopt


_glibc = _load()


def one_heap() -> bool:
    """Every thread made from now on allocates from the main heap (call it before the server starts its threads).
    True when glibc took the setting."""
    return _glibc is not None and _glibc[1](M_ARENA_MAX, 1) == 1


def release_free_memory() -> bool:
    """True when memory was returned to the system."""
    return _glibc is not None and _glibc[0](0) == 1
