"""gptc.Model: a GPT-2 checkpoint loaded by libgptc, with transformers-shaped
generate(), a streaming iterator, and perplexity.

Concurrency: one model runs one computation at a time; calls from several
threads are serialized. Generations run on the model's worker thread (the C
generation loop calls back per token, and a callback cannot yield), so a
stream's consumer and the engine overlap, and the caller's thread stays free
for Ctrl-C; stopping the iteration makes the next callback return non-zero,
which ends the C loop.
"""
import ctypes
import dataclasses
import math
import os
import queue
import struct
import threading
from contextlib import contextmanager
from typing import List, Optional

from . import _capi
from ._errors import ArgumentError, ClosedError, Error
from ._capi import CGenerateParams
from ._tokenizer import Closing, Handle, Tokenizer, ids_arg, int_arg, text_arg

_DTYPES = {"f32": _capi.DTYPE_F32, "fp32": _capi.DTYPE_F32, "float32": _capi.DTYPE_F32,
           "f16": _capi.DTYPE_F16, "fp16": _capi.DTYPE_F16, "float16": _capi.DTYPE_F16,
           "bf16": _capi.DTYPE_BF16, "bfloat16": _capi.DTYPE_BF16}
_DTYPE_NAMES = {_capi.DTYPE_F32: "float32", _capi.DTYPE_F16: "float16", _capi.DTYPE_BF16: "bfloat16"}


def _f32(x):
    """The shortest decimal that reads back as the same float32 (0.9, not
    0.8999999761581421)."""
    if not math.isfinite(x):
        return x
    for digits in range(6, 10):
        y = float("%.*g" % (digits, x))
        if struct.unpack("f", struct.pack("f", y))[0] == x:
            return y
    return x


@dataclasses.dataclass(frozen=True)
class Config:
    """The GPT2Config fields that change the math, with transformers' names;
    `dtype` is the checkpoint's weight dtype."""
    vocab_size: int
    n_positions: int
    n_embd: int
    n_layer: int
    n_head: int
    n_inner: int
    layer_norm_epsilon: float
    activation_function: str
    scale_attn_weights: bool
    scale_attn_by_inverse_layer_idx: bool
    reorder_and_upcast_attn: bool
    bos_token_id: Optional[int]
    eos_token_id: Optional[int]
    dtype: str

    def to_dict(self):
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class GenerationConfig:
    """generate()'s defaults for this model: generation_config.json, else
    transformers' defaults (gptc_generate_default_params)."""
    max_new_tokens: Optional[int]  # None: up to max_length tokens in all
    max_length: int
    min_new_tokens: int
    do_sample: bool
    temperature: float
    top_k: int
    top_p: float
    repetition_penalty: float
    no_repeat_ngram_size: int
    eos_token_id: List[int]

    def to_dict(self):
        return dataclasses.asdict(self)


def _float_arg(name, v):
    if isinstance(v, (str, bytes, bool)):
        raise ArgumentError("%s: %r is not a number" % (name, v))
    try:
        return float(v)
    except (TypeError, ValueError):
        raise ArgumentError("%s: %r is not a number" % (name, v)) from None


class Model(Closing):
    """A Hugging Face GPT-2-family checkpoint (GPT2LMHeadModel) on libgptc.

    model = gptc.Model(name_or_path, backend="auto", dtype="f16", threads=None, revision="main", device=0)

    name_or_path: a checkpoint folder, or a Hub model id ("gpt2", "org/name")
    at `revision` (branch, tag or commit), found in the Hugging Face cache or
    downloaded into it, as from_pretrained does (HF_HUB_OFFLINE, HF_TOKEN,
    HF_ENDPOINT, HF_HUB_CACHE / HF_HOME are honoured; see gptc_hub_resolve).

    backend: "auto" (CUDA when a GPU is usable, else CPU), "cpu" or "cuda".
    dtype: weights on the GPU, "f16", "bf16" or "f32" (the CPU computes in fp32).
    threads: CPU threads (None: all cores).
    device: the GPU (CUDA device ordinal) for the cuda backend.
    tokenizer: a folder, a Hub id or a gptc.Tokenizer (default: the model's
    own, loaded when first needed).

    Free it with close() or a with block; everything is freed anyway when the
    object is garbage-collected.
    """

    def __init__(self, name_or_path, backend="auto", dtype="f16", threads=None, *, revision="main",
                 tokenizer=None, device=0):
        self._h = None
        self._lock = threading.Lock()      # one computation at a time
        self._tok_lock = threading.Lock()  # the tokenizer's first load
        self._streams = set()              # stop events of the streams in flight
        self._worker = _WorkerThread()     # runs the generations
        self._tokenizer = None
        self._own_tokenizer = False
        self.name_or_path = os.fspath(name_or_path)
        if backend not in ("auto", "cpu", "cuda"):
            raise ArgumentError("backend: %r is not 'auto', 'cpu' or 'cuda'" % (backend,))
        if dtype not in _DTYPES:
            raise ArgumentError("dtype: %r is not 'f16', 'bf16' or 'f32'" % (dtype,))
        params = _capi.lib.gptc_model_default_params()
        params.n_threads = 0 if threads is None else int_arg("threads", threads, 1, 4096)
        params.backend = backend.encode()
        params.dtype = _DTYPES[dtype]
        params.device = int_arg("device", device, 0, 1023)
        self.path = _capi.hub_resolve(name_or_path, revision)  # the folder
        out = ctypes.c_void_p()
        _capi.check(_capi.lib.gptc_model_load(os.fsencode(self.path), ctypes.byref(params), ctypes.byref(out)))
        self._h = Handle(out.value, _capi.lib.gptc_model_free, "the model")
        ptr = out.value
        if isinstance(tokenizer, Tokenizer):
            self._tokenizer = tokenizer
        elif tokenizer is not None:
            self._tokenizer, self._own_tokenizer = Tokenizer(tokenizer), True

        c = _capi.lib.gptc_model_config(ptr).contents
        self.config = Config(
            vocab_size=c.n_vocab, n_positions=c.n_ctx, n_embd=c.n_embd, n_layer=c.n_layer, n_head=c.n_head,
            n_inner=c.n_inner, layer_norm_epsilon=_f32(c.layer_norm_epsilon),
            activation_function=c.activation.decode("utf-8", "replace"),
            scale_attn_weights=bool(c.scale_attn_weights),
            scale_attn_by_inverse_layer_idx=bool(c.scale_attn_by_inverse_layer_idx),
            reorder_and_upcast_attn=bool(c.reorder_and_upcast_attn),
            bos_token_id=c.bos_token_id if c.bos_token_id >= 0 else None,
            eos_token_id=c.eos_token_id if c.eos_token_id >= 0 else None,
            dtype=_DTYPE_NAMES.get(c.dtype, str(c.dtype)))
        g = _capi.lib.gptc_generate_default_params(ptr)
        self.generation_config = GenerationConfig(
            max_new_tokens=g.max_new_tokens if g.max_new_tokens >= 0 else None, max_length=g.max_length,
            min_new_tokens=g.min_new_tokens, do_sample=bool(g.do_sample), temperature=_f32(g.temperature),
            top_k=g.top_k, top_p=_f32(g.top_p), repetition_penalty=_f32(g.repetition_penalty),
            no_repeat_ngram_size=g.no_repeat_ngram_size,
            eos_token_id=list(g.eos_token_ids[:g.n_eos_token_ids]))
        self.backend = _capi.lib.gptc_model_backend(ptr).decode()
        self.threads = _capi.lib.gptc_model_n_threads(ptr)
        self.weight_bytes = _capi.lib.gptc_model_weight_bytes(ptr)

    # ---- lifetime ----

    def close(self):
        """Stops the streams in flight, waits for the calls running, and frees
        the model (and the tokenizer it loaded). Safe to call more than once."""
        h = self.__dict__.get("_h")
        if h is None:  # __init__ failed before the model was loaded
            return
        for stop in list(self._streams):
            stop.set()
        self._worker.shutdown()
        h.close()
        if self._own_tokenizer and self._tokenizer is not None:
            self._tokenizer.close()

    @property
    def closed(self):
        return self._h is None or self._h.closed


    def __repr__(self):
        return "gptc.Model(%r, backend=%r, n_layer=%d, n_embd=%d%s)" % (
            self.name_or_path, getattr(self, "backend", "?"), self.config.n_layer, self.config.n_embd,
            ", closed" if self.closed else "")

    # ---- tokenizer ----

    @property
    def tokenizer(self):
        """The model's tokenizer (loaded from its folder on first use)."""
        if self._tokenizer is None:
            if self.closed:
                raise ClosedError("the model is closed")
            tok = Tokenizer(self.path)
            with self._tok_lock:
                if self._tokenizer is None:
                    self._tokenizer, self._own_tokenizer = tok, True
                    tok = None
            if tok is not None:
                tok.close()
        return self._tokenizer

    # ---- generation ----

    def _prompt(self, prompt):
        if isinstance(prompt, (str, bytes, bytearray, memoryview)):
            data = text_arg("prompt", prompt)
            if not data:
                raise ArgumentError("prompt: empty prompt")
            prompt = self.tokenizer.encode(data)
            if not prompt:
                raise ArgumentError("prompt: encodes to no tokens")
        return ids_arg("prompt", prompt)

    def _params(self, max_new_tokens, max_length, min_new_tokens, do_sample, temperature, top_k, top_p,
                repetition_penalty, no_repeat_ngram_size, seed, eos_token_id, stop, num_beams, truncate):
        """gptc_generate_params: the model's defaults, then the arguments that
        are not None. Returns (params, objects to keep alive during the call)."""
        nb = None if num_beams is None else int_arg("num_beams", num_beams, 1)
        with self._h.use() as m:
            p = _capi.lib.gptc_generate_default_params(m)
        # One sequence per call here (the best one with beams).
        p.num_return_sequences = 1
        if nb is not None:
            p.num_beams = nb
        if max_new_tokens is not None:
            p.max_new_tokens = int_arg("max_new_tokens", max_new_tokens, 0)
        if max_length is not None:
            p.max_length = int_arg("max_length", max_length, 0)
            if max_new_tokens is None:
                p.max_new_tokens = -1  # max_length is what the caller asked for
        if min_new_tokens is not None:
            p.min_new_tokens = int_arg("min_new_tokens", min_new_tokens)
        if do_sample is not None:
            p.do_sample = 1 if do_sample else 0
        if temperature is not None:
            p.temperature = _float_arg("temperature", temperature)
        if top_k is not None:
            p.top_k = int_arg("top_k", top_k)
        if top_p is not None:
            p.top_p = _float_arg("top_p", top_p)
        if repetition_penalty is not None:
            p.repetition_penalty = _float_arg("repetition_penalty", repetition_penalty)
        if no_repeat_ngram_size is not None:
            p.no_repeat_ngram_size = int_arg("no_repeat_ngram_size", no_repeat_ngram_size)
        if seed is not None:
            p.seed = int_arg("seed", seed, 0, (1 << 64) - 1)
        if eos_token_id is not None:
            eos = [eos_token_id] if not isinstance(eos_token_id, (list, tuple)) else list(eos_token_id)
            if len(eos) > _capi.MAX_EOS:
                raise ArgumentError("eos_token_id: %d ids, at most %d" % (len(eos), _capi.MAX_EOS))
            for i, e in enumerate(eos):
                p.eos_token_ids[i] = int_arg("eos_token_id", e)
            p.n_eos_token_ids = len(eos)
        keep = []
        if stop is not None:
            stops = [stop] if isinstance(stop, (str, bytes)) else list(stop)
            enc = []
            for s in stops:
                b = text_arg("stop", s)
                if b"\0" in b:
                    raise ArgumentError("stop: %r contains a NUL character" % (s,))
                enc.append(b)
            if enc:
                arr = (ctypes.c_char_p * len(enc))(*enc)
                keep += [enc, arr]
                p.stop_strings = ctypes.cast(arr, ctypes.POINTER(ctypes.c_char_p))
                p.n_stop_strings = len(enc)
        p.truncate_prompt = 1 if truncate else 0
        return p, keep

    @contextmanager
    def _compute(self):
        """The model pointer, held for one computation (the model lock)."""
        with self._h.use() as m, self._lock:
            if self._h.closed:  # close() came while this call waited its turn
                raise ClosedError("the model is closed")
            yield m

    def _check(self, p, ids, n, tok):
        """Runs the library's checks of the arguments and the prompt now:
        gptc_generate with max_new_tokens 0 validates and returns."""
        q = CGenerateParams.from_buffer_copy(p)
        q.max_new_tokens = 0
        with self._h.use() as m, _tokenizer_use(tok) as tptr:
            st = _capi.lib.gptc_generate(m, tptr, ids, n, ctypes.byref(q), _capi.NO_TOKEN_FN, None, None, None)
            msg = _capi.last_error() if st != _capi.OK else None
        if st != _capi.OK:
            _capi.check_status(st, msg)

    def generate(self, prompt, max_new_tokens=None, *, max_length=None, min_new_tokens=None, do_sample=None,
                 temperature=None, top_k=None, top_p=None, repetition_penalty=None, no_repeat_ngram_size=None,
                 seed=None, eos_token_id=None, stop=None, num_beams=None, num_return_sequences=None, truncate=False,
                 return_ids=False, batch_size=None, kv_memory=None, fast_decode=False):
        """Generates a continuation of `prompt` (text, or a list of token ids).

        Returns the generated text (the prompt is not repeated, eos is not
        included), or with return_ids=True the generated token ids (an eos or
        stop-string token that ended generation included), like the CLI's
        `gptc generate` and `--ids`.

        Arguments left at None take the model's generation_config defaults,
        with transformers' semantics: do_sample, temperature, top_k, top_p,
        repetition_penalty, no_repeat_ngram_size, min_new_tokens, max_length
        (prompt + new tokens, used when max_new_tokens is not given),
        eos_token_id (an id or a list; [] never stops on eos). seed makes
        sampling reproducible; stop is a string or a list of strings that end
        generation once the text reaches one. truncate=True keeps the end of a
        prompt too long for the context (otherwise a gptc.RangeError).
        num_beams > 1 runs beam search (transformers' semantics, the model's
        length_penalty / early_stopping) and returns the best sequence; with
        beams the text arrives at the end, not token by token.
        num_return_sequences=K (1 <= K <= num_beams) returns a list: the K
        best hypotheses of the beam search, best first, texts without eos (or
        with return_ids=True their ids, eos included).

        A list of prompts (texts, or lists of token ids) is generated as a
        batch (continuous batching, weights read once per step for all) and
        returns a list of results in the same order, each exactly what the
        prompt gives alone. batch_size: prompts decoded together (default
        32); kv_memory: bytes the K/V cache may take (prompts wait for room);
        fast_decode=True (CUDA): tensor-core products for the decode steps,
        much faster for large batches of large models, but a result may then
        differ from the prompt's alone where two tokens nearly tie.
        Beam search runs the prompts one after another.
        """
        p, keep = self._params(max_new_tokens, max_length, min_new_tokens, do_sample, temperature, top_k, top_p,
                               repetition_penalty, no_repeat_ngram_size, seed, eos_token_id, stop, num_beams,
                               truncate)
        if _is_batch(prompt):
            if num_return_sequences is not None:
                raise ArgumentError("num_return_sequences: not with a list of prompts")
            return self._generate_batch(prompt, p, keep, return_ids, batch_size, kv_memory, fast_decode)
        if batch_size is not None or kv_memory is not None or fast_decode:
            raise ArgumentError("%s: only with a list of prompts" %
                                ("batch_size" if batch_size is not None else
                                 "kv_memory" if kv_memory is not None else "fast_decode"))
        ids, n = self._prompt(prompt)
        # Text, and stop strings, need the tokenizer; ids alone do not.
        tok = self.tokenizer if p.n_stop_strings or not return_ids else None
        if num_return_sequences is not None:
            p.num_return_sequences = int_arg("num_return_sequences", num_return_sequences, 1)
            run = Stream(self, tok, ids, n, p, keep, text=not return_ids, beams=True)
            try:
                return list(run)[0]
            finally:
                run.close()
        return self._run_one(ids, n, p, keep, return_ids)

    def _generate_batch(self, prompts, p, keep, return_ids, batch_size, kv_memory, fast_decode):
        """gptc_generate_batch over the prompts (tokenized here), on the
        worker thread like every generation."""
        encoded = [self._prompt(x) for x in prompts]
        if p.num_beams > 1:
            return [self._run_one(ids, n, p, keep, return_ids) for ids, n in encoded]
        bp = _capi.lib.gptc_batch_default_params()
        if batch_size is not None:
            bp.max_batch = int_arg("batch_size", batch_size, 1, 65536)
        if kv_memory is not None:
            bp.kv_memory = int_arg("kv_memory", kv_memory, 1, (1 << 64) - 1)
        bp.fast_decode = 1 if fast_decode else 0
        tok = self.tokenizer if p.n_stop_strings or not return_ids else None
        n = len(encoded)
        arr = (ctypes.POINTER(ctypes.c_int32) * n)(*[ids for ids, _ in encoded])
        lens = (ctypes.c_size_t * n)(*[k for _, k in encoded])
        outs = (ctypes.POINTER(ctypes.c_int32) * n)()
        out_lens = (ctypes.c_size_t * n)()
        done = queue.SimpleQueue()

        def job():
            try:
                with _tokenizer_use(tok) as tptr, self._compute() as m:
                    st = _capi.lib.gptc_generate_batch(m, tptr, n, arr, lens, ctypes.byref(p), ctypes.byref(bp),
                                                       None, None, outs, out_lens)
                    done.put((st, _capi.last_error() if st != _capi.OK else None))
            except BaseException as e:  # noqa: B036 - handed to the caller
                done.put(e)

        self._worker.submit(job)
        r = done.get()
        if isinstance(r, BaseException):
            raise r
        if r[0] != _capi.OK:
            _capi.check_status(*r)
        seqs = []
        try:
            for i in range(n):
                seqs.append(outs[i][:out_lens[i]])
        finally:
            for i in range(n):
                _capi.free(outs[i])
        if return_ids:
            return seqs
        eos = set(p.eos_token_ids[:p.n_eos_token_ids])
        return [self.tokenizer.decode([t for t in s if t not in eos]) for s in seqs]

    def _run_one(self, ids, n, p, keep, return_ids):
        """One prompt. The generation runs on a worker thread while this one
        waits on a queue: Ctrl-C (KeyboardInterrupt) then arrives here at
        once, and close() stops the C loop at the next token."""
        # Text, and stop strings, need the tokenizer; ids alone do not.
        tok = self.tokenizer if p.n_stop_strings or not return_ids else None
        run = Stream(self, tok, ids, n, p, keep, text=not return_ids)
        try:
            text = "".join(run)
        finally:
            run.close()
        return run.ids if return_ids else text

    def stream(self, prompt, max_new_tokens=None, *, max_length=None, min_new_tokens=None, do_sample=None,
               temperature=None, top_k=None, top_p=None, repetition_penalty=None, no_repeat_ngram_size=None,
               seed=None, eos_token_id=None, stop=None, num_beams=None, truncate=False):
        """Like generate(), but an iterator of text pieces as the tokens
        arrive (a UTF-8 character split across tokens comes out whole):

            for piece in model.stream("Hello", max_new_tokens=40):
                print(piece, end="", flush=True)

        The pieces concatenate to generate()'s text for the same arguments.
        Bad arguments raise here; errors of the generation itself come out of
        the iteration. Leaving the loop early (break, an exception, close())
        stops the generation. `.ids` holds the generated ids so far.
        """
        p, keep = self._params(max_new_tokens, max_length, min_new_tokens, do_sample, temperature, top_k, top_p,
                               repetition_penalty, no_repeat_ngram_size, seed, eos_token_id, stop, num_beams,
                               truncate)
        ids, n = self._prompt(prompt)
        tok = self.tokenizer
        self._check(p, ids, n, tok)
        return Stream(self, tok, ids, n, p, keep)

    def perplexity(self, text, stride=None):
        """Perplexity of `text` (str, or token ids) with the sliding-window
        recipe of the transformers documentation: windows of n_positions
        tokens, `stride` apart (default n_positions // 2), as `gptc perplexity`."""
        if isinstance(text, (str, bytes, bytearray, memoryview)):
            text = self.tokenizer.encode(text_arg("text", text))
        ids, n = ids_arg("text", text)
        if stride is None:
            stride = max(self.config.n_positions // 2, 1)
        stride = int_arg("stride", stride)
        ppl = ctypes.c_double()
        with self._compute() as m:
            st = _capi.lib.gptc_perplexity(m, ids, n, stride, ctypes.byref(ppl))
            msg = _capi.last_error() if st != _capi.OK else None
        if st != _capi.OK:
            _capi.check_status(st, msg)
        return ppl.value


def _is_batch(prompt):
    """A list of texts, or a list of token id lists (a list of ints is one prompt)."""
    if not isinstance(prompt, (list, tuple)) or not prompt:
        return False
    return all(isinstance(x, (str, bytes, bytearray, list, tuple)) for x in prompt)


class _NoTokenizer:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def _tokenizer_use(tok):
    return tok._h.use() if tok is not None else _NoTokenizer()


_DONE = object()


class _WorkerThread:
    """The thread that runs a model's generations, one after another, started
    at the first. One thread for the model's life, not one per call: OpenMP
    keeps a thread pool per calling thread, which a fresh thread would build
    again each time. The thread holds no reference to the model between jobs,
    so a model dropped without close() is still collected."""

    def __init__(self):
        self._jobs = queue.SimpleQueue()
        self._thread = None
        self._closed = False
        self._lock = threading.Lock()

    def submit(self, job):
        with self._lock:
            if self._closed:
                raise ClosedError("the model is closed")
            if self._thread is None:
                self._thread = threading.Thread(target=_serve, args=(self._jobs,), name="gptc-worker", daemon=True)
                self._thread.start()
        self._jobs.put(job)

    def is_current(self):
        return self._thread is threading.current_thread()

    def shutdown(self):
        """Ends the thread after the jobs already submitted."""
        with self._lock:
            t, self._thread = self._thread, None
            self._closed = True
        if t is not None:
            self._jobs.put(None)
            if t is not threading.current_thread():
                t.join()


def _serve(jobs):
    while True:
        job = jobs.get()
        if job is None:
            return
        try:
            job()  # catches everything itself, and always reports its end
        finally:
            del job  # hold nothing (the model) while waiting for the next


class _Job:
    """One generation, as the worker thread runs it. It holds what the job
    needs but not the Stream, so that a Stream dropped by its consumer is
    collected (and stops the generation) while the job still runs."""

    def __init__(self, model, tokenizer, ids, n, params, keep, text, beams=False):
        self.model, self.tok, self.text, self.beams = model, tokenizer, text, beams
        self.prompt, self.n, self.params, self.keep = ids, n, params, keep
        self.eos = set(params.eos_token_ids[:params.n_eos_token_ids])
        self.queue = queue.SimpleQueue()
        self.stop = threading.Event()
        self.ids = []

    def run(self):
        """gptc_generate with a callback that feeds the detokenizer and the
        queue. Errors are read here (gptc_last_error is per thread) and handed
        to the consumer through the queue; _DONE always comes last."""
        if self.stop.is_set():  # closed before its turn came
            self.queue.put(_DONE)
            return
        detok = ctypes.c_void_p()
        failure = []
        text = ctypes.c_void_p()
        length = ctypes.c_size_t()

        def on_token(token, _user):
            try:
                if self.stop.is_set():
                    return 1
                self.ids.append(token)
                if token in self.eos or not self.text:
                    return 0
                st = _capi.lib.gptc_detok_push(detok, token, ctypes.byref(text), ctypes.byref(length))
                if st != _capi.OK:
                    failure.append((st, _capi.last_error()))
                    return 1
                if length.value:
                    self.queue.put(ctypes.string_at(text, length.value).decode("utf-8", "replace"))
                return 0
            except BaseException as e:  # noqa: B036 - handed to the consumer
                failure.append(e)
                return 1

        fn = _capi.TOKEN_FN(on_token)
        try:
            if self.beams:
                self.queue.put(self._beams())
                return
            with _tokenizer_use(self.tok) as tptr, self.model._compute() as m:
                if self.text:
                    _capi.check(_capi.lib.gptc_detok_new(tptr, ctypes.byref(detok)))
                _capi.check(_capi.lib.gptc_generate(m, tptr, self.prompt, self.n, ctypes.byref(self.params), fn,
                                                    None, None, None))
                if failure:
                    f = failure[0]
                    if isinstance(f, BaseException):
                        raise f
                    _capi.check_status(*f)
                if self.text and not self.stop.is_set():
                    _capi.check(_capi.lib.gptc_detok_flush(detok, ctypes.byref(text), ctypes.byref(length)))
                    if length.value:
                        self.queue.put(ctypes.string_at(text, length.value).decode("utf-8", "replace"))
        except BaseException as e:  # noqa: B036 - handed to the consumer
            self.queue.put(e)
        finally:
            _capi.lib.gptc_detok_free(detok)
            self.queue.put(_DONE)


    def _beams(self):
        """gptc_generate_beams: a list of num_return_sequences id lists, or
        texts (eos left out, as generate() leaves it out)."""
        k = self.params.num_return_sequences
        out = ctypes.POINTER(ctypes.c_int32)()
        lens = (ctypes.c_size_t * k)()
        with _tokenizer_use(self.tok) as tptr, self.model._compute() as m:
            _capi.check(_capi.lib.gptc_generate_beams(m, tptr, self.prompt, self.n, ctypes.byref(self.params),
                                                      ctypes.byref(out), lens, None))
        seqs, off = [], 0
        try:
            for n in lens:
                seqs.append(out[off:off + n])
                off += n
        finally:
            _capi.free(out)
        if not self.text:
            return seqs
        return [self.tok.decode([t for t in s if t not in self.eos]) for s in seqs]


class Stream(Closing):
    """The iterator of Model.stream(): text pieces from the model's worker
    thread, which runs gptc_generate (generate() drains one too, with
    text=False when only ids are wanted).

    Generation starts at the first next(). close(), or dropping the iterator
    (leaving a for loop does), stops it at the next token and waits for the
    worker, so nothing is left running or allocated.
    """

    def __init__(self, model, tokenizer, ids, n, params, keep, text=True, beams=False):
        self._w = _Job(model, tokenizer, ids, n, params, keep, text, beams)
        self._started = False
        self._finished = False

    @property
    def ids(self):
        """The generated ids so far (an eos that ended generation included)."""
        return self._w.ids

    def __iter__(self):
        return self

    def __next__(self):
        if self._finished:
            raise StopIteration
        w = self._w
        if not self._started:
            w.model._streams.add(w.stop)
            try:
                w.model._worker.submit(w.run)
            except BaseException:
                self._finish()
                raise
            self._started = True
        item = w.queue.get()
        if item is _DONE or isinstance(item, BaseException):
            self._finish()
            if item is _DONE:
                raise StopIteration
            raise item
        return item

    def _finish(self, done=True):
        """Marks the end; unless `done` (_DONE already received), waits for
        the worker to finish this generation."""
        self._finished = True
        w = self._w
        if self._started and not done and not w.model._worker.is_current():
            while w.queue.get() is not _DONE:
                pass
        w.model._streams.discard(w.stop)
        w.keep = None

    def close(self):
        """Stops the generation and waits for the worker; safe to repeat."""
        if "_w" not in self.__dict__ or self._finished:
            return
        self._w.stop.set()
        self._finish(done=False)

