"""onnxruntime-genai's C API through ctypes: the calls the engine makes, with the GIL released.

onnxruntime-genai's Python binding keeps the GIL for the whole of each call. Measured on a
2-core AMD EPYC: while one thread read a 256-token prompt chunk, another thread's
``time.sleep(0.001)`` took 1.34 s, so thirty prompts at once left the server unable to answer
``/health``. ctypes releases the GIL around every foreign call, so the engine's thread computes
while the server's threads run. Only what the engine uses is bound here, on the very library the
Python binding loads (same version, same onnxruntime). The C API is not thread-safe: one thread
(the engine's) makes every call.
"""

from __future__ import annotations

import contextlib
import ctypes
import sys
from functools import cache
from pathlib import Path
from typing import Any

_P = ctypes.c_void_p
_INTS = ctypes.POINTER(ctypes.c_int32)


class OgaError(RuntimeError):
    """A call into onnxruntime-genai failed; the message is the library's."""


_SIGNATURES: dict[str, tuple[Any, list[Any]]] = {
    "OgaResultGetError": (ctypes.c_char_p, [_P]),
    "OgaDestroyResult": (None, [_P]),
    "OgaCreateConfig": (_P, [ctypes.c_char_p, ctypes.POINTER(_P)]),
    "OgaConfigOverlay": (_P, [_P, ctypes.c_char_p]),
    "OgaDestroyConfig": (None, [_P]),
    "OgaCreateModelFromConfig": (_P, [_P, ctypes.POINTER(_P)]),
    "OgaDestroyModel": (None, [_P]),
    "OgaCreateAdapters": (_P, [_P, ctypes.POINTER(_P)]),
    "OgaDestroyAdapters": (None, [_P]),
    "OgaLoadAdapter": (_P, [_P, ctypes.c_char_p, ctypes.c_char_p]),
    "OgaUnloadAdapter": (_P, [_P, ctypes.c_char_p]),
    "OgaCreateGeneratorParams": (_P, [_P, ctypes.POINTER(_P)]),
    "OgaDestroyGeneratorParams": (None, [_P]),
    "OgaGeneratorParamsSetSearchNumber": (_P, [_P, ctypes.c_char_p, ctypes.c_double]),
    "OgaGeneratorParamsSetSearchBool": (_P, [_P, ctypes.c_char_p, ctypes.c_bool]),
    "OgaCreateGenerator": (_P, [_P, _P, ctypes.POINTER(_P)]),
    "OgaDestroyGenerator": (None, [_P]),
    "OgaSetActiveAdapter": (_P, [_P, _P, ctypes.c_char_p]),
    "OgaGenerator_AppendTokens": (_P, [_P, _INTS, ctypes.c_size_t]),
    "OgaGenerator_GenerateNextToken": (_P, [_P]),
    "OgaGenerator_GetNextTokens": (_P, [_P, ctypes.POINTER(_INTS), ctypes.POINTER(ctypes.c_size_t)]),
    "OgaGenerator_IsDone": (ctypes.c_bool, [_P]),
}


@cache
def library() -> ctypes.CDLL:
    """The onnxruntime-genai shared library that its Python package ships (loaded once)."""
    import onnxruntime_genai  # finds and loads the onnxruntime it depends on

    folder = Path(onnxruntime_genai.__file__).parent
    name = {"win32": "onnxruntime-genai.dll", "darwin": "libonnxruntime-genai.dylib"}.get(
        sys.platform, "libonnxruntime-genai.so"
    )
    lib = ctypes.CDLL(str(folder / name))
    for function, (restype, argtypes) in _SIGNATURES.items():
        getattr(lib, function).restype = restype
        getattr(lib, function).argtypes = argtypes
    return lib


def _check(result: int | None) -> None:
    if result:
        lib = library()
        message = (lib.OgaResultGetError(result) or b"unknown error").decode(errors="replace")
        lib.OgaDestroyResult(result)
        raise OgaError(message)


class _Handle:
    _destroy = ""

    def __init__(self) -> None:
        self._ptr = _P()

    @property
    def ptr(self) -> _P:
        if not self._ptr:
            raise OgaError(f"{type(self).__name__} is closed")
        return self._ptr

    def close(self) -> None:
        """Free the native object now (later calls raise :class:`OgaError`)."""
        if self._ptr:
            getattr(library(), self._destroy)(self._ptr)
            self._ptr = _P()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # at interpreter exit the library may be gone first
            self.close()


class Model(_Handle):
    """A model folder (``genai_config.json`` + ONNX), with an optional JSON overlay of its config."""

    _destroy = "OgaDestroyModel"

    def __init__(self, folder: Path, overlay: str | None = None) -> None:
        super().__init__()
        lib = library()
        config = _P()
        _check(lib.OgaCreateConfig(str(folder).encode(), ctypes.byref(config)))
        try:
            if overlay:
                _check(lib.OgaConfigOverlay(config, overlay.encode()))
            _check(lib.OgaCreateModelFromConfig(config, ctypes.byref(self._ptr)))
        finally:
            lib.OgaDestroyConfig(config)


class Adapters(_Handle):
    """The LoRA adapters loaded for ``model``, by name."""

    _destroy = "OgaDestroyAdapters"

    def __init__(self, model: Model) -> None:
        super().__init__()
        self.model = model  # freed after the adapters
        _check(library().OgaCreateAdapters(model.ptr, ctypes.byref(self._ptr)))

    def load(self, path: Path, name: str) -> None:
        """Load an ``.onnx_adapter`` file as ``name``."""
        _check(library().OgaLoadAdapter(self.ptr, str(path).encode(), name.encode()))

    def unload(self, name: str) -> None:
        """Unload ``name`` (refused by the library while a generator uses it)."""
        _check(library().OgaUnloadAdapter(self.ptr, name.encode()))


class Generator(_Handle):
    """One sequence's generation state (its key/value cache), with search options and an adapter."""

    _destroy = "OgaDestroyGenerator"

    def __init__(self, model: Model, options: dict[str, float | int | bool]) -> None:
        super().__init__()
        lib = library()
        self.model = model
        self.adapters: Adapters | None = None  # kept alive while this generator may use one
        params = _P()
        _check(lib.OgaCreateGeneratorParams(model.ptr, ctypes.byref(params)))
        try:
            for key, value in options.items():
                if isinstance(value, bool):
                    _check(lib.OgaGeneratorParamsSetSearchBool(params, key.encode(), value))
                else:
                    _check(lib.OgaGeneratorParamsSetSearchNumber(params, key.encode(), float(value)))
            _check(lib.OgaCreateGenerator(model.ptr, params, ctypes.byref(self._ptr)))
        finally:
            lib.OgaDestroyGeneratorParams(params)

    def set_active_adapter(self, adapters: Adapters, name: str) -> None:
        """Decode with adapter ``name`` (before the first token is appended)."""
        _check(library().OgaSetActiveAdapter(self.ptr, adapters.ptr, name.encode()))
        self.adapters = adapters

    def append_tokens(self, tokens: list[int]) -> None:
        """Run the model over ``tokens`` (a prompt or a chunk of one)."""
        array = (ctypes.c_int32 * len(tokens))(*tokens)
        _check(library().OgaGenerator_AppendTokens(self.ptr, array, len(tokens)))

    def generate_next_token(self) -> int:
        """Compute and choose the next token; returns it."""
        lib = library()
        _check(lib.OgaGenerator_GenerateNextToken(self.ptr))
        out = _INTS()
        count = ctypes.c_size_t()
        _check(lib.OgaGenerator_GetNextTokens(self.ptr, ctypes.byref(out), ctypes.byref(count)))
        if count.value < 1:
            raise OgaError("no token was generated")
        return int(out[0])

    def is_done(self) -> bool:
        """True when the generator reached its end (an end token or ``max_length``)."""
        return bool(library().OgaGenerator_IsDone(self.ptr))
