"""The C library through ctypes: finding libgptc.so, the declarations of
include/gptc.h, and status codes turned into exceptions.

Every structure and signature here mirrors gptc.h exactly; tests/test_python.py
compares the structure layouts with the C compiler's (tests/py_abi_layout.c).
Ownership follows the header: handles from *_load / *_new are released with
the matching *_free; arrays returned through `T **out` are malloc'ed and
released here with the C library's free().
"""
import ctypes
import ctypes.util
import os

from ._errors import check_status

LIBRARY_NAME = "libgptc.so"

# gptc_status
OK = 0

# gptc_dtype
DTYPE_F32, DTYPE_F16, DTYPE_BF16 = 0, 1, 2

MAX_EOS = 8  # GPTC_MAX_EOS


class CConfig(ctypes.Structure):
    """gptc_config."""
    _fields_ = [
        ("n_vocab", ctypes.c_int32),
        ("n_ctx", ctypes.c_int32),
        ("n_embd", ctypes.c_int32),
        ("n_layer", ctypes.c_int32),
        ("n_head", ctypes.c_int32),
        ("n_inner", ctypes.c_int32),
        ("layer_norm_epsilon", ctypes.c_float),
        ("activation", ctypes.c_char * 32),
        ("scale_attn_weights", ctypes.c_int),
        ("scale_attn_by_inverse_layer_idx", ctypes.c_int),
        ("reorder_and_upcast_attn", ctypes.c_int),
        ("bos_token_id", ctypes.c_int32),
        ("eos_token_id", ctypes.c_int32),
        ("dtype", ctypes.c_int),  # gptc_dtype
    ]


class CModelParams(ctypes.Structure):
    """gptc_model_params."""
    _fields_ = [
        ("n_threads", ctypes.c_int),
        ("backend", ctypes.c_char_p),
        ("dtype", ctypes.c_int),  # gptc_dtype
        ("progress", ctypes.c_void_p),  # void (*)(float, void *); unused from Python
        ("progress_user", ctypes.c_void_p),
        ("device", ctypes.c_int32),
    ]


class CGenerateParams(ctypes.Structure):
    """gptc_generate_params."""
    _fields_ = [
        ("max_new_tokens", ctypes.c_int32),
        ("max_length", ctypes.c_int32),
        ("min_new_tokens", ctypes.c_int32),
        ("do_sample", ctypes.c_int),
        ("temperature", ctypes.c_float),
        ("top_k", ctypes.c_int32),
        ("top_p", ctypes.c_float),
        ("repetition_penalty", ctypes.c_float),
        ("no_repeat_ngram_size", ctypes.c_int32),
        ("seed", ctypes.c_uint64),
        ("eos_token_ids", ctypes.c_int32 * MAX_EOS),
        ("n_eos_token_ids", ctypes.c_int32),
        ("stop_strings", ctypes.POINTER(ctypes.c_char_p)),
        ("n_stop_strings", ctypes.c_size_t),
        ("truncate_prompt", ctypes.c_int),
        ("num_beams", ctypes.c_int32),
        ("length_penalty", ctypes.c_double),
        ("early_stopping", ctypes.c_int),  # gptc_early_stopping
        ("num_return_sequences", ctypes.c_int32),
        ("presence_penalty", ctypes.c_float),
        ("frequency_penalty", ctypes.c_float),
    ]


class CBatchParams(ctypes.Structure):
    """gptc_batch_params."""
    _fields_ = [
        ("kv_memory", ctypes.c_uint64),
        ("max_batch", ctypes.c_int32),
        ("max_prefill_tokens", ctypes.c_int32),
        ("fast_decode", ctypes.c_int32),
    ]


# gptc_token_fn: int (*)(int32_t id, void *user)
TOKEN_FN = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int32, ctypes.c_void_p)
NO_TOKEN_FN = TOKEN_FN()  # NULL (ctypes does not take None for a function pointer)

_p = ctypes.POINTER
_vp = ctypes.c_void_p
_i32p = _p(ctypes.c_int32)

# name: (restype, argtypes); gptc_status is an int.
_SIGNATURES = {
    "gptc_last_error": (ctypes.c_char_p, []),
    "gptc_tokenizer_load": (ctypes.c_int, [ctypes.c_char_p, _p(_vp)]),
    "gptc_tokenizer_load_files": (ctypes.c_int, [ctypes.c_char_p, ctypes.c_char_p, _p(_vp)]),
    "gptc_tokenizer_free": (None, [_vp]),
    "gptc_tokenizer_n_vocab": (ctypes.c_int32, [_vp]),
    "gptc_tokenizer_eos_id": (ctypes.c_int32, [_vp]),
    "gptc_tokenizer_encode": (ctypes.c_int, [_vp, ctypes.c_char_p, ctypes.c_size_t, _p(_i32p),
                                             _p(ctypes.c_size_t)]),
    # Not NUL-terminated: a void pointer read with string_at(p, len).
    "gptc_tokenizer_token_bytes": (_vp, [_vp, ctypes.c_int32, _p(ctypes.c_size_t)]),
    "gptc_tokenizer_decode": (ctypes.c_int, [_vp, _i32p, ctypes.c_size_t, _p(_vp), _p(ctypes.c_size_t)]),
    "gptc_detok_new": (ctypes.c_int, [_vp, _p(_vp)]),
    "gptc_detok_free": (None, [_vp]),
    "gptc_detok_push": (ctypes.c_int, [_vp, ctypes.c_int32, _p(_vp), _p(ctypes.c_size_t)]),
    "gptc_detok_flush": (ctypes.c_int, [_vp, _p(_vp), _p(ctypes.c_size_t)]),
    "gptc_hub_resolve": (ctypes.c_int, [ctypes.c_char_p, ctypes.c_char_p, _p(_vp)]),
    "gptc_model_default_params": (CModelParams, []),
    "gptc_model_load": (ctypes.c_int, [ctypes.c_char_p, _p(CModelParams), _p(_vp)]),
    "gptc_model_free": (None, [_vp]),
    "gptc_model_config": (_p(CConfig), [_vp]),
    "gptc_model_weight_bytes": (ctypes.c_size_t, [_vp]),
    "gptc_model_n_threads": (ctypes.c_int, [_vp]),
    "gptc_model_backend": (ctypes.c_char_p, [_vp]),
    "gptc_generate_default_params": (CGenerateParams, [_vp]),
    "gptc_generate": (ctypes.c_int, [_vp, _vp, _i32p, ctypes.c_size_t, _p(CGenerateParams), TOKEN_FN, _vp,
                                     _p(_i32p), _p(ctypes.c_size_t)]),
    "gptc_generate_beams": (ctypes.c_int, [_vp, _vp, _i32p, ctypes.c_size_t, _p(CGenerateParams), _p(_i32p),
                                           _p(ctypes.c_size_t), _p(ctypes.c_float)]),
    "gptc_batch_default_params": (CBatchParams, []),
    # (model, tok, n, prompts, n_prompts, params, bparams, fn, user, out_ids, out_lens)
    "gptc_generate_batch": (ctypes.c_int, [_vp, _vp, ctypes.c_size_t, _p(_i32p), _p(ctypes.c_size_t),
                                           _p(CGenerateParams), _p(CBatchParams), _vp, _vp, _p(_i32p),
                                           _p(ctypes.c_size_t)]),
    "gptc_perplexity": (ctypes.c_int, [_vp, _i32p, ctypes.c_size_t, ctypes.c_int32, _p(ctypes.c_double)]),
}


def _candidates():
    """(description, path or name) pairs in search order."""
    env = os.environ.get("GPTC_LIBRARY")
    if env:
        # An explicit choice is the only one: no silent fallback to another copy.
        return [("$GPTC_LIBRARY", env)]
    here = os.path.dirname(os.path.abspath(__file__))
    out = [("the package folder", os.path.join(here, LIBRARY_NAME)),
           # python/gptc/ in a source checkout (pip install -e): the repo's build/.
           ("the repository's build folder", os.path.normpath(os.path.join(here, "..", "..", "build",
                                                                          LIBRARY_NAME)))]
    out.append(("the system loader", ctypes.util.find_library("gptc") or LIBRARY_NAME))
    return out


def _load():
    tried = []
    for where, path in _candidates():
        if os.sep in path and not os.path.exists(path):
            tried.append("%s (%s: not found)" % (where, path))
            continue
        try:
            return ctypes.CDLL(path), path
        except OSError as e:
            tried.append("%s (%s)" % (where, e))
    if not os.environ.get("GPTC_LIBRARY"):
        tried.insert(0, "$GPTC_LIBRARY (not set)")
    raise ImportError("gptc: cannot load %s; looked in: %s. Build it first (cmake --build build, "
                      "target gptc_shared) or set GPTC_LIBRARY to its path."
                      % (LIBRARY_NAME, "; ".join(tried)))


lib, path = _load()
for _name, (_res, _args) in _SIGNATURES.items():
    try:
        _fn = getattr(lib, _name)
    except AttributeError:
        raise ImportError("gptc: %s (%s) has no function %s: it is older than this package"
                          % (LIBRARY_NAME, path, _name)) from None
    _fn.restype = _res
    _fn.argtypes = _args

# free() for the arrays the library malloc'ed: the C library's, found the way
# libgptc.so finds it (the process's global symbol scope).
_free = ctypes.CDLL(None).free
_free.restype = None
_free.argtypes = [_vp]


def free(ptr):
    if ptr:
        _free(ctypes.cast(ptr, _vp))


def last_error():
    return (lib.gptc_last_error() or b"").decode("utf-8", "replace")


def check(status):
    """Raises the exception of a failed status, with gptc_last_error()'s
    message (read at once, on the calling thread: it is thread-local)."""
    if status != OK:
        check_status(status, last_error())


def hub_resolve(name_or_path, revision):
    """The folder of a local path or a Hub model id (gptc_hub_resolve: the
    Hugging Face cache, downloading what is missing)."""
    name = os.fspath(name_or_path)
    if not isinstance(name, str):
        name = os.fsdecode(name)
    if revision is not None and not isinstance(revision, str):
        from ._errors import ArgumentError
        raise ArgumentError("revision: expected a str, got %s" % type(revision).__name__)
    out = ctypes.c_void_p()
    check(lib.gptc_hub_resolve(os.fsencode(name), revision.encode() if revision else None, ctypes.byref(out)))
    try:
        return os.fsdecode(ctypes.string_at(out.value))
    finally:
        free(out.value)
