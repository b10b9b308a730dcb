"""gptc.Tokenizer: GPT-2's byte-level BPE from libgptc (identical to
transformers' GPT2TokenizerFast), and the handle helper the Model shares."""
import ctypes
import operator
import os
import threading
from contextlib import contextmanager

from . import _capi
from ._errors import ArgumentError, ClosedError, RangeError

INT32_MIN, INT32_MAX = -(1 << 31), (1 << 31) - 1


class Handle:
    """A C handle released exactly once, after its last user: calls hold it
    through `with h.use() as ptr:`, and close() waits for them to finish."""

    def __init__(self, ptr, free, what):
        self._ptr, self._free, self._what = ptr, free, what
        self._cond = threading.Condition()
        self._users = 0

    @property
    def closed(self):
        return not self._ptr

    @contextmanager
    def use(self):
        with self._cond:
            if not self._ptr:
                raise ClosedError("%s is closed" % self._what)
            self._users += 1
            ptr = self._ptr
        try:
            yield ptr
        finally:
            with self._cond:
                self._users -= 1
                self._cond.notify_all()

    def close(self):
        with self._cond:
            ptr, self._ptr = self._ptr, None
            while self._users:
                self._cond.wait()
        if ptr:
            self._free(ptr)


def int_arg(name, v, lo=INT32_MIN, hi=INT32_MAX):
    """An integer argument within [lo, hi], else ArgumentError naming it."""
    if isinstance(v, bool):
        raise ArgumentError("%s: %r is not an integer" % (name, v))
    try:
        i = operator.index(v)
    except TypeError:
        raise ArgumentError("%s: %r is not an integer" % (name, v)) from None
    if not lo <= i <= hi:
        raise ArgumentError("%s: %d is outside [%d, %d]" % (name, i, lo, hi))
    return i


def ids_arg(name, ids):
    """A sequence of token ids as a ctypes int32 array. Ids outside int32 are
    rejected here (ctypes would wrap them silently); the library checks the
    vocabulary range itself, with its own message."""
    if isinstance(ids, (str, bytes)):
        raise ArgumentError("%s: expected token ids, got %s" % (name, type(ids).__name__))
    try:
        vals = [operator.index(i) if not isinstance(i, bool) else None for i in ids]
    except TypeError:
        raise ArgumentError("%s: token ids must be integers" % name) from None
    for i in vals:
        if i is None:
            raise ArgumentError("%s: token ids must be integers" % name)
        if not INT32_MIN <= i <= INT32_MAX:
            raise RangeError("%s: token id %d is out of range" % (name, i))
    return (ctypes.c_int32 * len(vals))(*vals), len(vals)


def text_arg(name, text):
    """str or bytes as UTF-8 bytes (a lone surrogate goes through as invalid
    UTF-8, which the library replaces with U+FFFD)."""
    if isinstance(text, str):
        return text.encode("utf-8", "surrogatepass")
    if isinstance(text, (bytes, bytearray, memoryview)):
        return bytes(text)
    raise ArgumentError("%s: expected str or bytes, got %s" % (name, type(text).__name__))


class Closing:
    """`with` support and a close() on garbage collection, for the classes
    that hold library handles (each defines close(), safe to call twice)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


class Tokenizer(Closing):
    """GPT-2 byte-level BPE, like AutoTokenizer.from_pretrained(name_or_path):
    a folder (vocab.json + merges.txt, else tokenizer.json) or a Hugging Face
    Hub model id at `revision`, resolved as gptc.Model resolves it.

    `encode(text) -> list[int]`, `decode(ids) -> str`. Free it with close()
    (or a with block); it is freed anyway when garbage-collected.
    """

    def __init__(self, name_or_path, revision="main"):
        self.name_or_path = os.fspath(name_or_path)
        self.path = _capi.hub_resolve(name_or_path, revision)
        out = ctypes.c_void_p()
        _capi.check(_capi.lib.gptc_tokenizer_load(os.fsencode(self.path), ctypes.byref(out)))
        self._h = Handle(out.value, _capi.lib.gptc_tokenizer_free, "the tokenizer")
        self.vocab_size = _capi.lib.gptc_tokenizer_n_vocab(out.value)
        eos = _capi.lib.gptc_tokenizer_eos_id(out.value)
        self.eos_token_id = eos if eos >= 0 else None

    def __len__(self):
        return self.vocab_size

    def encode(self, text):
        """Token ids of `text` (str, or bytes: invalid UTF-8 becomes U+FFFD).
        Special tokens written in the text ("<|endoftext|>") map to their ids."""
        data = text_arg("text", text)
        ids = ctypes.POINTER(ctypes.c_int32)()
        n = ctypes.c_size_t()
        with self._h.use() as tok:
            _capi.check(_capi.lib.gptc_tokenizer_encode(tok, data, len(data), ctypes.byref(ids),
                                                        ctypes.byref(n)))
        try:
            return ids[:n.value]
        finally:
            _capi.free(ids)

    def decode(self, ids):
        """Text of `ids`; bytes that are not valid UTF-8 become U+FFFD, as in
        transformers' decode()."""
        arr, n = ids_arg("ids", ids)
        text = ctypes.c_void_p()
        length = ctypes.c_size_t()
        with self._h.use() as tok:
            _capi.check(_capi.lib.gptc_tokenizer_decode(tok, arr, n, ctypes.byref(text), ctypes.byref(length)))
        try:
            return ctypes.string_at(text, length.value).decode("utf-8", "replace")
        finally:
            _capi.free(text)

    def token_bytes(self, token_id):
        """Raw bytes of one token (possibly part of a UTF-8 character)."""
        i = int_arg("token_id", token_id)
        n = ctypes.c_size_t()
        with self._h.use() as tok:
            p = _capi.lib.gptc_tokenizer_token_bytes(tok, i, ctypes.byref(n))
            if not p and not n.value:
                # token_bytes reports no message: the range is known here.
                raise RangeError("token_id: %d is out of range [0, %d)" % (i, self.vocab_size))
            return ctypes.string_at(p, n.value) if n.value else b""

    def close(self):
        """Frees the tokenizer; safe to call more than once."""
        h = self.__dict__.get("_h")
        if h is not None:
            h.close()

    @property
    def closed(self):
        return self._h.closed


    def __repr__(self):
        return "gptc.Tokenizer(%r, vocab_size=%d)" % (self.name_or_path, self.vocab_size)
