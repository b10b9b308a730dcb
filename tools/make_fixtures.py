#!/usr/bin/env python3
"""Write the golden-file fixtures that tests/test_fixtures.py checks the gptc CLI against.

    python3 tools/make_fixtures.py [--out tests/fixtures] [--only NAME ...] [--beams-only] [--batch-only]

Every fixture is a small GPT2LMHeadModel checkpoint folder made with Hugging Face transformers
itself (GPT2Config + GPT2LMHeadModel, weights re-initialised from a fixed torch seed at a large
scale so that every parameter matters), plus expected.json holding what transformers computes with
it in float64, starting FROM THE WEIGHTS AS STORED (fp16/bf16 checkpoints are loaded back from disk
and upcast to float64, so the rounding of the stored weights is part of the reference).

Deterministic: weights come from torch.Generator seeds, prompts from random.Random(string) seeds.

Robustness of greedy references: at every greedy step the processed scores (after repetition
penalty / n-gram ban / min-new-tokens) are checked in float64: top1 - top2 must be at least
MARGIN_REL * max(1, |top1|).  A prompt that fails the check is replaced by the next deterministic
candidate; if none passes the script fails loudly.  As a second guard every generate() case is
re-run with the same checkpoint loaded in float32 and must give identical ids, and the float32
logits are compared with the float64 ones (the worst error is printed, for the tolerance in
tests/test_fixtures.py).

expected.json keys (see tests/test_fixtures.py for how each is checked):
  config, storage, stats        for the reader
  logits          [{prompt, logits}]                last-position logits, float64
  greedy          [{prompt, kwargs, output}]        model.generate(**kwargs), generated ids only
  generate_cases  [{name, prompt, kwargs, output}]  repetition penalty, n-gram ban, min_new_tokens,
                                                    eos stop, generation_config defaults, ...
  text_greedy     [{prompt_text, prompt_ids, kwargs, output}]   (full-vocab fixtures)
  tokenizer       [{text, ids}]                                  (full-vocab fixtures)
  perplexity      [{file, stride, max_length, perplexity, ...}]  (full-vocab fixtures)

Beam search (a few fixtures, marked beams=True) goes to a separate beam.json, checked by
tests/test_beam.c through the library: transformers generate() with num_beams 2-4, several
length penalties, early_stopping True / False / "never", num_return_sequences 1..num_beams,
n-gram blocking, repetition penalty and min_new_tokens, with eos ids chosen among tokens the model
really emits (so that hypotheses finish by eos, others by length). Each case keeps every returned
sequence (best first, cut where transformers' beam_indices end) and its sequences_scores. Robustness
takes the place of the greedy margin check, since a beam search makes many comparisons: a case is
kept only if the float32 checkpoint gives the same sequences, and so do BEAM_NOISE_RUNS float64
runs with uniform noise of +-BEAM_NOISE added to every processed log-probability at every step
(our float32 logits differ from float64 by ~1e-5); otherwise the next deterministic prompt is
tried. --beams-only rewrites just the beam.json files of existing fixture folders.

Batches (the same fixtures) go to batch.json, checked by tests/test_fixtures.py through
`gptc generate --prompt-ids-file`: prompts of different lengths run by transformers as one
generate() call with left padding, in float64, with plain greedy, repetition penalty + n-gram ban,
an eos that ends some rows early, and min_new_tokens. A batch is kept only if its rows equal each
prompt run alone (transformers' own batching changes nothing), every greedy step alone has the
MARGIN_REL margin, and the float32 checkpoint batched gives the same ids. --batch-only rewrites just
the batch.json files.
"""

import argparse
import copy
import json
import math
import os
import random
import shutil
import sys
import time
import warnings

import torch
import torch.nn.functional as F

warnings.filterwarnings("ignore")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import transformers  # noqa: E402
from safetensors import safe_open  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from transformers import (GPT2Config, GPT2LMHeadModel, GPT2TokenizerFast,  # noqa: E402
                          GenerationConfig, LogitsProcessor, LogitsProcessorList)
from transformers.activations import ACT2FN  # noqa: E402

transformers.logging.set_verbosity_error()
try:
    transformers.utils.logging.disable_progress_bar()
except Exception:
    pass

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.environ.get("GPTC_SHARED", os.path.join(os.path.dirname(REPO), "shared"))
TOK_SRC = os.path.join(SHARED, "data", "gpt2-tokenizer")
SHAKESPEARE = os.path.join(SHARED, "data", "tinyshakespeare.txt")

MARGIN_REL = 1e-3          # greedy steps: top1 - top2 >= MARGIN_REL * max(1, |top1|), float64
MAX_ATTEMPTS = 60          # prompt candidates tried per case before failing
LOGIT_ATOL = 2e-5          # the logits tolerance of tests/test_fixtures.py (for the stats printed here):
LOGIT_RTOL = 5e-6          #   |got - ref| <= LOGIT_ATOL * max(1, max|ref|) + LOGIT_RTOL * |ref|
PPL_CHARS = 4200           # size of the ppl.txt excerpt
BEAM_NOISE = 1e-3          # beam cases: +- noise on every processed log-prob, every step, ...
BEAM_NOISE_RUNS = 4        # ... in this many runs that must all reproduce the sequences
DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}
MASK_DTYPES = {"F32": torch.float32, "BOOL": torch.bool, "U8": torch.uint8}

# Activations GPT-2's MLP can use in a plain forward: every ACT2FN entry without learned
# parameters (prelu and xielu carry their own weights, so a GPT-2 checkpoint cannot hold them).
ACTS_WITH_PARAMS = {"prelu", "xielu"}

SMALL = dict(vocab_size=512, n_positions=64, n_embd=32, n_layer=2, n_head=2)
ACT_SMALL = dict(n_embd=16, n_head=2)  # the act-* fixtures: only the activation differs


def fx(name, cfg=None, **kw):
    c = dict(SMALL)
    c.update(cfg or {})
    d = dict(name=name, cfg=c, layout="hf", dtype="F32", seed=0, kind="full",
             shard=None, mask_dtype=None, gen_config=None, eos_mode=None, tokenizer=None,
             fc_gain=2.0, write_gen_config=True, beams=False)
    d.update(kw)
    return d


FIXTURES = [
    fx("base-gelu_new", dict(activation_function="gelu_new", bos_token_id=511, eos_token_id=511),
       seed=101, beams=True),
    fx("orig-f32-gelu", dict(n_positions=128, n_embd=48, n_layer=3, n_head=4, n_inner=144,
                             activation_function="gelu"),        # bos/eos: GPT2Config's 50256
       layout="orig", mask_dtype="F32", seed=102),
    fx("orig-f16-gelu_fast-boolmask", dict(n_head=4, layer_norm_epsilon=1e-3, activation_function="gelu_fast",
                                           bos_token_id=0, eos_token_id=0),
       layout="orig", dtype="F16", mask_dtype="BOOL", seed=103, write_gen_config=False),
    fx("orig-bf16-gelu_pytorch_tanh-u8mask", dict(n_positions=96, n_embd=64, n_inner=128,
                                                  activation_function="gelu_pytorch_tanh",
                                                  bos_token_id=511, eos_token_id=511),
       layout="orig", dtype="BF16", mask_dtype="U8", seed=104),
    fx("untied-relu", dict(n_inner=96, activation_function="relu", tie_word_embeddings=False,
                           bos_token_id=511, eos_token_id=511),
       seed=105),
    fx("sharded-f16-silu", dict(n_positions=128, n_embd=64, n_layer=3, n_head=4, activation_function="silu",
                                bos_token_id=1, eos_token_id=2),
       dtype="F16", shard="100KB", seed=106),
    fx("noscale-bf16-swish", dict(scale_attn_weights=False, activation_function="swish",
                                  bos_token_id=511, eos_token_id=511),
       dtype="BF16", seed=107),
    fx("invlayer-reorder-quick_gelu", dict(n_embd=48, n_layer=3, n_head=3, layer_norm_epsilon=1e-3,
                                           scale_attn_by_inverse_layer_idx=True, reorder_and_upcast_attn=True,
                                           activation_function="quick_gelu", bos_token_id=511, eos_token_id=511),
       seed=108),
    fx("eos-tanh", dict(activation_function="tanh", bos_token_id=511, eos_token_id=511),
       seed=109, eos_mode="single", beams=True),
    fx("eoslist-f16-gelu_new", dict(n_inner=64, activation_function="gelu_new", bos_token_id=511,
                                    eos_token_id=511),
       dtype="F16", seed=110, eos_mode="list", beams=True),
    # full GPT-2 vocabulary, with tokenizer files (symlinks into ../gpt2-tokenizer/)
    fx("gpt2vocab-f16", dict(vocab_size=50257, n_positions=128, n_embd=16, n_layer=2, n_head=2,
                             activation_function="gelu_new", bos_token_id=50256, eos_token_id=50256),
       dtype="F16", seed=201, tokenizer="files", beams=True),
    fx("gpt2vocab-tokjson-orig-bf16", dict(vocab_size=50257, n_positions=256, n_embd=16, n_layer=2, n_head=2,
                                           activation_function="gelu_new", bos_token_id=50256,
                                           eos_token_id=50256),
       layout="orig", dtype="BF16", mask_dtype="BOOL", seed=202, tokenizer="json"),
]
_MAIN_ACTS = {f["cfg"].get("activation_function", "gelu_new") for f in FIXTURES}
for _i, _act in enumerate(sorted(a for a in ACT2FN.keys() if a not in ACTS_WITH_PARAMS and a not in _MAIN_ACTS)):
    FIXTURES.append(fx("act-" + _act, dict(ACT_SMALL, activation_function=_act, bos_token_id=511, eos_token_id=511),
                       seed=300 + _i, kind="act", fc_gain=4.0))

TOKENIZER_TEXTS = [
    "Hello world",
    "Hello, world! How are you today?",
    "The quick brown fox jumps over the lazy dog.",
    "",
    " ",
    "   ",
    "\n",
    "\n\n\n",
    "\r\n",
    "\t\tindented with tabs",
    "  two leading spaces",
    "trailing spaces   ",
    "multiple   inner    spaces",
    "line one\nline two\n\nline four\n",
    "I'm sure they'll say we've done what you'd've done, isn't it?",
    "I'M SURE THEY'LL SAY WE'VE DONE IT, DON'T THEY?",
    "it's the dog's ball 's 't 're 've 'm 'll 'd",
    "1234567890 3.14159 -42 +7 1,000,000 1e-9 0x1F",
    "2024-01-15T12:34:56Z",
    "def f(x):\n    return x ** 2  # square\n",
    "int main(void) {\n\treturn printf(\"%d\\n\", 42);\n}\n",
    "for (size_t i = 0; i < n; ++i) a[i] += b[i] * c;",
    "<html><body class=\"x\">&amp; &lt;tag&gt;</body></html>",
    "https://huggingface.co/gpt2?x=1&y=two#frag",
    "user@example.com $100.50 50% #hashtag @mention",
    "!!!???...,,,;;;:::",
    "$$$ %%% ^^^ &&& *** ((( ))) ___ +++ ===",
    "supercalifragilisticexpialidocious antidisestablishmentarianism",
    "camelCaseIdentifier snake_case_variable SCREAMING_CASE kebab-case",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "          ten spaces then a word",
    "Emoji: 🤖🚀 😀👍🏽 👨‍👩‍👧‍👦 🇫🇷 ❤️",
    "你好，世界！这是一个测试。",
    "日本語のテキストとカタカナ、ひらがな。",
    "한국어 텍스트입니다",
    "Ångström, naïve café, résumé, Zürich, São Paulo",
    "combining: e\u0301 a\u0308 n\u0303 o\u0302\u0323",
    "Привет, мир! Ελληνικά γράμματα. שלום עולם. مرحبا بالعالم",
    "नमस्ते दुनिया ภาษาไทย",
    "digits ١٢٣ ४५६ ½ x² ①",
    "math ∑∫√∞≠≤≥ ∀x∈ℝ: x²≥0",
    "zero\u200bwidth\u200dspaces and\u00a0nbsp\u2009thin",
    "ǅemal Ǆ titlecase ß ẞ ﬁ ligature",
    "control \x01\x02\x7f chars",
    "text before<|endoftext|>text after",
    "<|endoftext|>",
    "<|endoftext|><|endoftext|> two in a row",
    "not special: <|endoftext| > < |endoftext|> <|endoftext",
    "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n",
    "Mixed 123abc abc123 a1b2c3 ---- ==== ____ .... ' '' \"quotes\"",
    "  \n  \n\t \u3000 ideographic space",
]

TEXT_PROMPTS = [
    "Hello, my name is",
    "The quick brown fox",
    "To be, or not to be, that is the question:",
    "def main():\n    ",
    "Once upon a time",
    " In the beginning",
    "First Citizen:\n",
    "1, 2, 3, 4,",
    "The capital of France is",
    "ROMEO:",
    "import numpy as np\n",
    "Q: What is 2+2?\nA:",
]


# ----------------------------------------------------------------------------------------- helpers

def gain_init(model, seed, fc_gain):
    """Large-scale deterministic re-initialisation: every parameter nonzero and relevant."""
    g = torch.Generator().manual_seed(seed)

    def rn(shape):
        return torch.randn(shape, generator=g, dtype=torch.float32)

    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".ln_" in name or name.startswith("transformer.ln_f"):
                if name.endswith(".weight"):
                    p.copy_(1.0 + 0.3 * rn(p.shape))
                else:
                    p.copy_(0.2 * rn(p.shape))
            elif name.endswith(".bias"):
                p.copy_(0.2 * rn(p.shape))
            elif name == "transformer.wte.weight":
                p.copy_(0.5 * rn(p.shape))
            elif name == "transformer.wpe.weight":
                p.copy_(0.3 * rn(p.shape))
            elif name == "lm_head.weight":
                p.copy_((2.0 / math.sqrt(p.shape[1])) * rn(p.shape))
            else:  # Conv1D weights, shape [in, out]
                gain = fc_gain if name.endswith("mlp.c_fc.weight") else 2.0
                p.copy_((gain / math.sqrt(p.shape[0])) * rn(p.shape))


def stored_tensors(folder):
    """All tensors in the folder's safetensors files (sharded or not), as stored."""
    idx = os.path.join(folder, "model.safetensors.index.json")
    files = sorted(set(json.load(open(idx))["weight_map"].values())) if os.path.exists(idx) else ["model.safetensors"]
    out = {}
    for fn in files:
        with safe_open(os.path.join(folder, fn), framework="pt") as f:
            for k in f.keys():
                out[k] = f.get_tensor(k)
    return out


def attn_impl(folder):
    """eager (GPT-2's own attention code) for the references, except with reorder_and_upcast_attn:
    transformers' eager path for it only works in float32 (it raises for a float64 model); sdpa
    ignores the flag, which changes nothing mathematically (the flag only affects rounding)."""
    return "sdpa" if json.load(open(os.path.join(folder, "config.json"))).get("reorder_and_upcast_attn") else "eager"


def load(folder, dtype):
    m = GPT2LMHeadModel.from_pretrained(folder, dtype=dtype, attn_implementation=attn_impl(folder))
    m.eval()
    return m


def verify_loaded(model, folder):
    """The model transformers loaded must hold exactly the stored weights (no silent re-init)."""
    st = stored_tensors(folder)
    sd = model.state_dict()
    used = set()
    for k, v in sd.items():
        cands = [k, k[len("transformer."):]] if k.startswith("transformer.") else [k]
        if k == "lm_head.weight" and model.config.tie_word_embeddings:
            cands += ["transformer.wte.weight", "wte.weight"]
        src = next((c for c in cands if c in st), None)
        if src is None:
            raise RuntimeError(f"{folder}: model tensor {k} not found in the stored files")
        used.add(src)
        if not torch.equal(st[src].to(v.dtype), v):
            raise RuntimeError(f"{folder}: loaded {k} differs from stored {src}")
    extra = sorted(set(st) - used)
    for k in extra:
        if not (k.endswith(".attn.bias") or k.endswith(".attn.masked_bias")):
            raise RuntimeError(f"{folder}: stored tensor {k} not used by the model")
    return extra


def gen(model, prompt, kwargs):
    """generate() -> (generated ids, min relative top1-top2 margin over the processed scores)."""
    inp = torch.tensor([prompt], dtype=torch.long)
    with torch.no_grad():
        out = model.generate(inp, attention_mask=torch.ones_like(inp), output_scores=True,
                             return_dict_in_generate=True, **kwargs)
    ids = out.sequences[0, len(prompt):].tolist()
    margin = math.inf
    for step, s in enumerate(out.scores):
        v = s[0].double()
        top = torch.topk(v, 2)
        t1, t2 = top.values[0].item(), top.values[1].item()
        if top.indices[0].item() != ids[step]:
            raise RuntimeError("generate() did not pick the argmax of its scores")
        m = (t1 - t2) / max(1.0, abs(t1))
        margin = min(margin, m)
    return ids, margin


def last_logits(model, prompt):
    with torch.no_grad():
        return model(torch.tensor([prompt], dtype=torch.long)).logits[0, -1].double()


def perplexity(model, ids, max_length, stride):
    """transformers docs, "Perplexity of fixed-length models" (sliding window), in float64.

    The loss is computed here in float64 with the same semantics as model(input_ids, labels=...)
    .loss (shift by one, ignore -100, mean), because transformers' loss upcasts logits to float32.
    """
    seq_len = ids.size(1)
    nll_sum, n_tokens, prev_end_loc, windows = 0.0, 0, 0, 0
    for begin_loc in range(0, seq_len, stride):
        end_loc = min(begin_loc + max_length, seq_len)
        trg_len = end_loc - prev_end_loc
        input_ids = ids[:, begin_loc:end_loc]
        target_ids = input_ids.clone()
        target_ids[:, :-trg_len] = -100
        with torch.no_grad():
            logits = model(input_ids).logits
        loss = F.cross_entropy(logits[:, :-1].reshape(-1, logits.size(-1)).double(),
                               target_ids[:, 1:].reshape(-1), ignore_index=-100, reduction="mean")
        num_valid_tokens = (target_ids != -100).sum().item()
        batch_size = target_ids.size(0)
        num_loss_tokens = num_valid_tokens - batch_size
        nll_sum += loss.item() * num_loss_tokens
        n_tokens += num_loss_tokens
        prev_end_loc = end_loc
        windows += 1
        if end_loc == seq_len:
            break
    return math.exp(nll_sum / n_tokens), n_tokens, windows


def hf_loss_check(model, ids, max_length):
    """Cross-check the float64 loss above against transformers' own (float32) loss."""
    input_ids = ids[:, :max_length]
    with torch.no_grad():
        hf = model(input_ids, labels=input_ids).loss.item()
        logits = model(input_ids).logits
    mine = F.cross_entropy(logits[0, :-1].double(), input_ids[0, 1:]).item()
    if abs(hf - mine) > 1e-5 * max(1.0, abs(mine)):
        raise RuntimeError(f"loss cross-check failed: transformers {hf} vs float64 {mine}")


def rel_err(a, b):
    return (a - b).abs().max().item() / max(1.0, b.abs().max().item())


def cfg_echo(cfg, gcfg):
    keys = ["vocab_size", "n_positions", "n_embd", "n_layer", "n_head", "n_inner", "activation_function",
            "layer_norm_epsilon", "scale_attn_weights", "scale_attn_by_inverse_layer_idx",
            "reorder_and_upcast_attn", "tie_word_embeddings", "bos_token_id", "eos_token_id"]
    d = {k: getattr(cfg, k, None) for k in keys}
    d["generation_config"] = gcfg
    return d


# ----------------------------------------------------------------------------------------- beams

# (name, prompt length, generate() kwargs, eos, want). eos: "early" = one id that greedy decoding
# emits at step 3..7, "late" = at step 9..13 (so some hypotheses finish by eos and others run to
# the length limit), "two" = an early and a late one, None = the checkpoint's generation_config.
# want: what the returned sequences must show, else the next prompt is tried: "eos" (the best
# ends by eos), "length" (the best runs to max_new_tokens), "mixed" (some of each), None.
BEAM_CASES = [
    ("beams2_lp1_early_false", 4, dict(num_beams=2, length_penalty=1.0, early_stopping=False), "early", "eos"),
    ("beams3_lp1_early_true_ret3", 5, dict(num_beams=3, length_penalty=1.0, early_stopping=True,
                                           num_return_sequences=3), "early", "eos"),
    ("beams4_lp0_never_ret2", 3, dict(num_beams=4, length_penalty=0.0, early_stopping="never",
                                      num_return_sequences=2), "late", None),
    ("beams4_lp2_false_ret4", 6, dict(num_beams=4, length_penalty=2.0, early_stopping=False,
                                      num_return_sequences=4), "late", "mixed"),
    ("beams3_lp-0.5_false_ret2", 4, dict(num_beams=3, length_penalty=-0.5, early_stopping=False,
                                         num_return_sequences=2), "early", "eos"),
    ("beams2_lp2_never_ret2", 5, dict(num_beams=2, length_penalty=2.0, early_stopping="never",
                                      num_return_sequences=2), "late", None),
    ("beams4_lp1_never_ngram2_ret4", 6, dict(num_beams=4, length_penalty=1.0, early_stopping="never",
                                             num_return_sequences=4, no_repeat_ngram_size=2), "late", None),
    ("beams3_lp1_true_rep1.3_ret2", 4, dict(num_beams=3, length_penalty=1.0, early_stopping=True,
                                            num_return_sequences=2, repetition_penalty=1.3), "early", None),
    ("beams2_ngram2_rep1.3_length", 5, dict(num_beams=2, length_penalty=1.0, early_stopping=False,
                                            num_return_sequences=2, no_repeat_ngram_size=2,
                                            repetition_penalty=1.3), None, "length"),
    ("beams4_lp1_false_min_new", 4, dict(num_beams=4, length_penalty=1.0, early_stopping=False,
                                         num_return_sequences=2, min_new_tokens=8), "early", None),
    ("beams3_two_eos_ret3", 5, dict(num_beams=3, length_penalty=1.0, early_stopping=False,
                                    num_return_sequences=3), "two", "eos"),
    ("beams4_short_length", 3, dict(num_beams=4, length_penalty=1.0, early_stopping=True,
                                    num_return_sequences=4, max_new_tokens=5), None, "length"),
]
BEAM_MAX_NEW = 16


class LogProbNoise(LogitsProcessor):
    """Uniform noise in [-eps, eps] on every processed log-probability (after generate()'s own
    processors), from a seeded generator: a stand-in for float32 rounding differences."""

    def __init__(self, seed, eps):
        self.g = torch.Generator().manual_seed(seed)
        self.eps = eps

    def __call__(self, input_ids, scores):
        noise = (torch.rand(scores.shape, generator=self.g, dtype=torch.float64) * 2 - 1) * self.eps
        return scores + noise.to(scores.dtype)


def beam_gen(model, prompt, kwargs, noise_seed=None):
    """generate() with beams -> (returned sequences without the prompt, each cut where its
    beam_indices end, best first; their sequences_scores)."""
    inp = torch.tensor([prompt], dtype=torch.long)
    extra = {}
    if noise_seed is not None:
        extra["logits_processor"] = LogitsProcessorList([LogProbNoise(noise_seed, BEAM_NOISE)])
    with torch.no_grad():
        out = model.generate(inp, attention_mask=torch.ones_like(inp), output_scores=True,
                             return_dict_in_generate=True, **kwargs, **extra)
    seqs = []
    for i in range(out.sequences.shape[0]):
        bi = out.beam_indices[i]
        n = int((bi >= 0).sum())
        if not bool((bi[:n] >= 0).all()):
            raise RuntimeError("beam_indices are not a prefix of valid entries")
        seqs.append(out.sequences[i, len(prompt):len(prompt) + n].tolist())
    return seqs, [float(x) for x in out.sequences_scores.tolist()]


def greedy_ids(model, prompt, n):
    """Plain argmax decoding, no eos: the tokens the model likes."""
    ids = list(prompt)
    with torch.no_grad():
        for _ in range(n):
            ids.append(int(model(torch.tensor([ids], dtype=torch.long)).logits[0, -1].argmax()))
    return ids[len(prompt):]


def load_both(folder):
    """The checkpoint in float64 and float32, its vocabulary size and its generation_config's eos ids."""
    m64, m32 = load(folder, torch.float64), load(folder, torch.float32)
    ge = m64.generation_config.eos_token_id
    default_eos = [e for e in (ge if isinstance(ge, list) else [ge]) if e is not None]
    return m64, m32, m64.config.vocab_size, default_eos


def write_beam_cases(spec, folder):
    """beam.json for one fixture folder; returns the number of cases."""
    name = spec["name"]
    m64, m32, V, default_eos = load_both(folder)
    cases, tried = [], 0
    for cname, L, ckw, eos_mode, want in BEAM_CASES:
        kw = dict(max_new_tokens=BEAM_MAX_NEW, do_sample=False, pad_token_id=0)
        kw.update(ckw)
        found = None
        for a in range(MAX_ATTEMPTS):
            tried += 1
            rng = random.Random(f"{name}/beam/{cname}/{a}")
            p = [rng.choice([t for t in range(V) if t not in default_eos]) if V < 4096 else
                 rng.randrange(V) for _ in range(L)]
            if any(t in default_eos for t in p):
                continue
            kwa = dict(kw)
            if eos_mode:
                g = greedy_ids(m64, p, 14)
                def pick(lo, hi, taken=()):
                    for k in range(lo, hi + 1):
                        x = g[k - 1]
                        if x not in g[:k - 1] and x not in p and x not in taken:
                            return x
                    return None
                early, late = pick(3, 7), pick(9, 13)
                eos = {"early": early, "late": late,
                       "two": [early, pick(9, 13, (early,))] if early is not None else None}[eos_mode]
                if eos is None or (isinstance(eos, list) and None in eos):
                    continue
                kwa["eos_token_id"] = eos
            eos_ids = kwa.get("eos_token_id", default_eos)
            eos_ids = eos_ids if isinstance(eos_ids, list) else [eos_ids]
            seqs, scores = beam_gen(m64, p, kwa)
            max_new = kwa["max_new_tokens"]
            ends = ["eos" if s and s[-1] in eos_ids else "length" for s in seqs]
            for s, e in zip(seqs, ends):
                if e == "length" and len(s) != max_new:
                    raise RuntimeError(f"{name}/{cname}: a hypothesis ended without eos before max_new_tokens")
            if want == "eos" and ends[0] != "eos":
                continue
            if want == "length" and ends[0] != "length":
                continue
            if want == "mixed" and len(set(ends)) < 2:
                continue
            if beam_gen(m32, p, kwa)[0] != seqs:
                continue
            if any(beam_gen(m64, p, kwa, noise_seed=1000 * a + r)[0] != seqs for r in range(BEAM_NOISE_RUNS)):
                continue
            found = {"name": cname, "prompt": p, "kwargs": kwa, "outputs": seqs, "scores": scores, "ends": ends}
            break
        if found is None:
            raise RuntimeError(f"{name}/{cname}: no prompt gave a beam case that is robust to float32 and "
                               f"+-{BEAM_NOISE} noise (and shows {want!r}) in {MAX_ATTEMPTS} attempts")
        cases.append(found)
    ends = [e for c in cases for e in c["ends"]]
    if "eos" not in ends or "length" not in ends:
        raise RuntimeError(f"{name}: the beam cases do not cover both endings (eos and length)")
    doc = {"name": name, "generated_by": "tools/make_fixtures.py",
           "transformers_version": transformers.__version__, "torch_version": torch.__version__,
           "noise": BEAM_NOISE, "noise_runs": BEAM_NOISE_RUNS, "prompt_attempts": tried, "cases": cases}
    path = os.path.join(folder, "beam.json")
    with open(path, "w") as f:
        json.dump(doc, f, separators=(",", ":"))
        f.write("\n")
    os.chmod(path, 0o644)
    return len(cases)


# ----------------------------------------------------------------------------------------- batches

# (name, prompt lengths, generate() kwargs, eos). One batch of prompts of different lengths, run
# by transformers as ONE generate() call with left padding (its batching), in float64. eos: as in
# BEAM_CASES, chosen per batch among tokens the first prompt's greedy decoding emits, so that some
# rows finish early and the others go on (their pad tokens after eos are not part of the output).
BATCH_CASES = [
    ("greedy_mixed_lengths", [1, 7, 3, 12, 5], dict(max_new_tokens=10), None),
    ("rep1.5_ngram2", [4, 9, 2, 6], dict(max_new_tokens=12, repetition_penalty=1.5, no_repeat_ngram_size=2), None),
    ("early_eos_some_rows", [3, 8, 5, 2, 10, 4], dict(max_new_tokens=12), "early"),
    ("min_new_tokens_eos", [6, 2, 9], dict(max_new_tokens=10, min_new_tokens=6), "early"),
]
BATCH_PAD = 0  # the pad id of the left padding (any id: the attention mask hides it)


def batch_gen(model, prompts, kwargs):
    """One generate() call for all prompts, left-padded -> per prompt the generated ids up to and
    including the first eos (what the row would give alone)."""
    L = max(len(p) for p in prompts)
    inp = torch.tensor([[BATCH_PAD] * (L - len(p)) + p for p in prompts], dtype=torch.long)
    mask = torch.tensor([[0] * (L - len(p)) + [1] * len(p) for p in prompts], dtype=torch.long)
    with torch.no_grad():
        out = model.generate(inp, attention_mask=mask, pad_token_id=BATCH_PAD, **kwargs)
    eos = kwargs.get("eos_token_id", model.generation_config.eos_token_id)
    eos = set(eos if isinstance(eos, list) else [eos]) - {None}
    res = []
    for row in out[:, L:].tolist():
        k = next((i + 1 for i, t in enumerate(row) if t in eos), len(row))
        res.append(row[:k])
    return res


def write_batch_cases(spec, folder):
    """batch.json for one fixture folder; returns the number of cases. A batch is kept only if
    transformers' batched float64 output equals each prompt run alone, every greedy step of each
    alone run has the float64 margin MARGIN_REL, and the float32 checkpoint batched gives the same."""
    name = spec["name"]
    m64, m32, V, default_eos = load_both(folder)
    cases, tried = [], 0
    for cname, lens, ckw, eos_mode in BATCH_CASES:
        found = None
        for a in range(MAX_ATTEMPTS):
            tried += 1
            rng = random.Random(f"{name}/batch/{cname}/{a}")
            prompts = [[rng.choice([t for t in range(V) if t not in default_eos]) if V < 4096 else
                        rng.randrange(V) for _ in range(L)] for L in lens]
            if any(t in default_eos for p in prompts for t in p):
                continue
            kw = dict(do_sample=False)
            kw.update(ckw)
            if eos_mode == "early":
                g = greedy_ids(m64, prompts[0], 8)
                e = next((x for k, x in enumerate(g[2:7], 3) if x not in g[:k - 1] and x not in prompts[0]), None)
                if e is None:
                    continue
                kw["eos_token_id"] = e
            alone = []
            ok = True
            for p in prompts:
                ids, margin = gen(m64, p, dict(kw, pad_token_id=BATCH_PAD))
                if margin < MARGIN_REL:
                    ok = False
                    break
                alone.append(ids)
            if not ok:
                continue
            if batch_gen(m64, prompts, kw) != alone or batch_gen(m32, prompts, kw) != alone:
                continue
            if eos_mode and not any(len(x) < kw["max_new_tokens"] for x in alone):
                continue
            found = {"name": cname, "prompts": prompts, "kwargs": kw, "outputs": alone}
            break
        if found is None:
            raise RuntimeError(f"{name}/{cname}: no batch of prompts gave robust batched references in "
                               f"{MAX_ATTEMPTS} attempts")
        cases.append(found)
    doc = {"name": name, "generated_by": "tools/make_fixtures.py",
           "transformers_version": transformers.__version__, "torch_version": torch.__version__,
           "pad_token_id": BATCH_PAD, "prompt_attempts": tried, "cases": cases}
    path = os.path.join(folder, "batch.json")
    with open(path, "w") as f:
        json.dump(doc, f, separators=(",", ":"))
        f.write("\n")
    os.chmod(path, 0o644)
    return len(cases)


# ----------------------------------------------------------------------------------------- writing

def write_checkpoint(spec, folder):
    cfg = GPT2Config(**spec["cfg"])
    cfg.architectures = ["GPT2LMHeadModel"]
    torch.manual_seed(spec["seed"])
    model = GPT2LMHeadModel(cfg)
    gain_init(model, spec["seed"], spec["fc_gain"])
    model = model.to(DTYPES[spec["dtype"]])
    if spec["layout"] == "hf":
        kw = {"max_shard_size": spec["shard"]} if spec["shard"] else {}
        model.save_pretrained(folder, **kw)
        if not spec["write_gen_config"] and os.path.exists(os.path.join(folder, "generation_config.json")):
            os.remove(os.path.join(folder, "generation_config.json"))
    else:
        # original openai-community/gpt2 layout: no "transformer." prefix, no lm_head.weight,
        # plus the causal-mask buffers h.N.attn.bias / h.N.attn.masked_bias that loaders ignore
        assert cfg.tie_word_embeddings
        sd = model.state_dict()
        out = {}
        for k, v in sd.items():
            if k == "lm_head.weight":
                continue
            assert k.startswith("transformer."), k
            out[k[len("transformer."):]] = v.detach().clone().contiguous()
        n = cfg.n_positions
        for i in range(cfg.n_layer):
            out[f"h.{i}.attn.bias"] = torch.tril(torch.ones(n, n)).view(1, 1, n, n).to(MASK_DTYPES[spec["mask_dtype"]])
            out[f"h.{i}.attn.masked_bias"] = torch.tensor(-1e4, dtype=torch.float32)
        save_file(out, os.path.join(folder, "model.safetensors"), metadata={"format": "pt"})
        cfg.n_ctx = cfg.n_positions
        cfg.save_pretrained(folder)
        if spec["write_gen_config"]:
            GenerationConfig(bos_token_id=cfg.bos_token_id, eos_token_id=cfg.eos_token_id).save_pretrained(folder)


def link_tokenizer(spec, folder, tokdir):
    names = ["vocab.json", "merges.txt"] if spec["tokenizer"] == "files" else ["tokenizer.json"]
    for n in names:
        os.symlink(os.path.join("..", os.path.basename(tokdir), n), os.path.join(folder, n))
    tok = GPT2TokenizerFast.from_pretrained(folder)
    if len(tok) != 50257 or len(tok.get_vocab()) != 50257:
        raise RuntimeError(f"{folder}: tokenizer has {len(tok)} entries, expected 50257")
    return tok


def make_fixture(spec, out_root, tokdir, ppl_path):
    t0 = time.time()
    name = spec["name"]
    folder = os.path.join(out_root, name)
    if os.path.lexists(folder):
        shutil.rmtree(folder)
    os.makedirs(folder)
    write_checkpoint(spec, folder)
    tok = link_tokenizer(spec, folder, tokdir) if spec["tokenizer"] else None

    m64 = load(folder, torch.float64)
    extra = verify_loaded(m64, folder)
    cfg = m64.config
    V, NP = cfg.vocab_size, cfg.n_positions
    kind = spec["kind"]
    notes = []

    # ---- eos fixtures: choose eos ids that greedy generation really emits, then write them into
    # generation_config.json (config.json keeps a different eos, so the override is tested too)
    eos_ids = set()
    for e in (cfg.eos_token_id, cfg.bos_token_id):
        if e is not None:
            eos_ids.add(e)
    plan = {}
    if spec["eos_mode"]:
        probe = copy.deepcopy(m64)
        probe.generation_config.eos_token_id = None
        base = dict(max_new_tokens=30, do_sample=False, pad_token_id=0)

        def passes(p, kw, check):
            o, mg = gen(probe, p, dict(base, **kw))
            return mg >= MARGIN_REL and check(o)

        def probe_prompt(tag, forbid, eos_of):
            """A prompt whose plain greedy output emits a new id at step k+1 (k in 4..8) that can
            serve as eos; the cases derived from it (run here with the eos passed explicitly) must
            pass the margin check too."""
            for a in range(MAX_ATTEMPTS):
                rng = random.Random(f"{name}/{tag}/{a}")
                p = [rng.randrange(V) for _ in range(5)]
                if any(t in eos_ids for t in p):
                    continue
                o, mg = gen(probe, p, base)
                if mg < MARGIN_REL:
                    continue
                for k in range(4, 9):
                    x = o[k]
                    if x in o[:k] or x in eos_ids or x in p or any(f in o[:k + 1] for f in forbid):
                        continue
                    eos = eos_of(x)
                    mn = k + 5
                    if not passes(p, dict(eos_token_id=eos), lambda r: len(r) == k + 1 and r[-1] == x):
                        continue
                    if not passes(p, dict(eos_token_id=eos, min_new_tokens=mn),
                                  lambda r: len(r) > k + 1 and not (set(r[:mn]) & set(eos if isinstance(eos, list) else [eos]))):
                        continue
                    if not passes(p, dict(eos_token_id=eos, min_new_tokens=mn, repetition_penalty=1.3),
                                  lambda r: True):
                        continue
                    if not passes(p, dict(eos_token_id=eos, min_new_tokens=3), lambda r: len(r) == k + 1):
                        continue
                    return p, o, k
            raise RuntimeError(f"{name}: no prompt found whose greedy output has a usable eos candidate")

        p1, o1, k1 = probe_prompt("eos1", [], lambda x: x)
        x1 = o1[k1]
        plan["p1"], plan["k1"], plan["x1"] = p1, k1, x1
        if spec["eos_mode"] == "list":
            p2, o2, k2 = probe_prompt("eos2", [x1], lambda x: [x1, x])
            x2 = o2[k2]
            if x2 in o1[:k1 + 1]:
                raise RuntimeError(f"{name}: second eos candidate collides")
            plan["p2"], plan["k2"], plan["x2"] = p2, k2, x2
            gen_eos = [x1, x2]
        else:
            gen_eos = x1
        plan["eos"] = gen_eos if isinstance(gen_eos, list) else [gen_eos]
        gc = GenerationConfig(bos_token_id=cfg.bos_token_id, eos_token_id=gen_eos, pad_token_id=0,
                              max_new_tokens=24)
        gc.save_pretrained(folder)
        del probe
        m64 = load(folder, torch.float64)
        verify_loaded(m64, folder)
        cfg = m64.config
        eos_ids |= set(gen_eos if isinstance(gen_eos, list) else [gen_eos])

    m32 = load(folder, torch.float32)
    gcfg_path = os.path.join(folder, "generation_config.json")
    gcfg = {k: v for k, v in json.load(open(gcfg_path)).items() if k != "transformers_version"} \
        if os.path.exists(gcfg_path) else None
    ge = m64.generation_config.eos_token_id
    for e in (ge if isinstance(ge, list) else [ge]):
        if e is not None:
            eos_ids.add(e)
    allowed = [t for t in range(V) if t not in eos_ids]

    stats = {"min_margin_rel": math.inf, "fp32_logits_err_rel": 0.0, "prompt_attempts": 0}

    def rand_prompt(tag, a, length):
        rng = random.Random(f"{name}/{tag}/{a}")
        return [rng.choice(allowed) for _ in range(length)]

    def find_case(tag, length, kwargs, differ_from=None, prompt=None, check=None):
        """First deterministic prompt whose greedy run passes the margin check (and, when asked,
        whose output differs from the plain-greedy one, so the processor under test matters)."""
        fallback = None
        for a in range(MAX_ATTEMPTS):
            p = prompt if prompt is not None else rand_prompt(tag, a, length)
            stats["prompt_attempts"] += 1
            o, mg = gen(m64, p, kwargs)
            ok = mg >= MARGIN_REL and (check is None or check(o))
            if ok:
                o32, _ = gen(m32, p, kwargs)
                if o32 != o:
                    notes.append(f"{tag}: float32 run diverged despite margin {mg:.2e}; prompt skipped")
                    ok = False
            if ok and differ_from is not None:
                base, _ = gen(m64, p, differ_from)
                if base == o:
                    if fallback is None:
                        fallback = (p, o, mg)
                    ok = False
            if ok:
                stats["min_margin_rel"] = min(stats["min_margin_rel"], mg)
                return p, o
            if prompt is not None:
                break
        if fallback is not None:
            p, o, mg = fallback
            notes.append(f"{tag}: no prompt made the output differ from plain greedy; kept one that does not")
            stats["min_margin_rel"] = min(stats["min_margin_rel"], mg)
            return p, o
        raise RuntimeError(f"{name}/{tag}: no prompt passed the float64 margin check "
                           f"(top1-top2 >= {MARGIN_REL} * max(1,|top1|)) in {MAX_ATTEMPTS} attempts")

    exp = {"name": name, "generated_by": "tools/make_fixtures.py",
           "transformers_version": transformers.__version__, "torch_version": torch.__version__,
           "config": cfg_echo(cfg, gcfg),
           "storage": {"layout": "transformers save_pretrained (transformer.* keys)" if spec["layout"] == "hf"
                       else "original gpt2 (no prefix, no lm_head, attn.bias/masked_bias buffers)",
                       "dtype": spec["dtype"], "sharded": bool(spec["shard"]),
                       "attn_bias_dtype": spec["mask_dtype"], "ignored_tensors": len(extra),
                       "tokenizer": {"files": "vocab.json+merges.txt", "json": "tokenizer.json only"}.get(spec["tokenizer"])},
           "margin_rel": MARGIN_REL, "reference_attn_implementation": attn_impl(folder)}

    # ---- greedy (plain) cases
    mnt = 30 if kind == "full" else 20
    greedy_kw = dict(max_new_tokens=mnt, do_sample=False, pad_token_id=0)
    greedy = []
    glens = [1, 4, NP // 4]
    for i, L in enumerate(glens):
        if spec["eos_mode"] and i == 0:
            p, o = find_case("greedy-eos", 0, greedy_kw, prompt=plan["p1"])
            assert o[-1] == plan["x1"] and len(o) == plan["k1"] + 1, (o, plan)
        else:
            p, o = find_case(f"greedy{i}", L, greedy_kw)
        greedy.append({"prompt": p, "kwargs": greedy_kw, "output": o})
    exp["greedy"] = greedy

    # ---- processor cases
    cases = []
    if kind == "full":
        def add(cname, L, extra_kw, differ=True, prompt=None, check=None, note=None):
            kw = dict(greedy_kw)
            kw.update(extra_kw)
            p, o = find_case(cname, L, kw, differ_from=greedy_kw if differ else None, prompt=prompt, check=check)
            c = {"name": cname, "prompt": p, "kwargs": kw, "output": o}
            if note:
                c["note"] = note
            cases.append(c)
            return o

        add("repetition_penalty_1.3", 6, dict(repetition_penalty=1.3))
        add("repetition_penalty_0.7", 6, dict(repetition_penalty=0.7))
        add("no_repeat_ngram_2", 8, dict(no_repeat_ngram_size=2))
        add("no_repeat_ngram_3", 8, dict(no_repeat_ngram_size=3))
        add("repetition_penalty_1.3+no_repeat_ngram_2", 8, dict(repetition_penalty=1.3, no_repeat_ngram_size=2))
        add("repetition_penalty_1.15+no_repeat_ngram_3", 3, dict(repetition_penalty=1.15, no_repeat_ngram_size=3))
        if spec["eos_mode"]:
            k1, x1 = plan["k1"], plan["x1"]
            add("eos_stop", 0, {}, differ=False, prompt=plan["p1"],
                check=lambda o: o[-1] == x1 and len(o) == k1 + 1,
                note=f"greedy emits eos {x1} at step {k1 + 1} and stops (eos included)")
            mn = k1 + 5
            add(f"min_new_tokens_{mn}", 0, dict(min_new_tokens=mn), prompt=plan["p1"],
                check=lambda o: len(o) > k1 + 1 and not (set(o[:mn]) & set(plan["eos"])),
                note=f"eos {x1} would be picked at step {k1 + 1}; min_new_tokens forbids it")
            add(f"min_new_tokens_{mn}+repetition_penalty_1.3", 0, dict(min_new_tokens=mn, repetition_penalty=1.3),
                differ=False, prompt=plan["p1"])
            if spec["eos_mode"] == "list":
                k2, x2 = plan["k2"], plan["x2"]
                add("eos_list_second", 0, {}, differ=False, prompt=plan["p2"],
                    check=lambda o: o[-1] == x2 and len(o) == k2 + 1,
                    note=f"second id {x2} of the eos list ends generation at step {k2 + 1}")
                add("min_new_tokens_3_no_effect", 0, dict(min_new_tokens=3), differ=False, prompt=plan["p2"],
                    check=lambda o: len(o) == k2 + 1,
                    note="min_new_tokens smaller than the eos step changes nothing")
            # no max_new_tokens: generation_config.json's max_new_tokens (24) applies
            kw = dict(do_sample=False, pad_token_id=0)
            p, o = find_case("generation_config_default_length", 2, kw,
                             check=lambda o: len(o) == 24 and not (set(o) & eos_ids))
            cases.append({"name": "generation_config_default_length", "prompt": p, "kwargs": kw, "output": o,
                          "note": "no max_new_tokens given: generation_config.json max_new_tokens=24 applies"})
    exp["generate_cases"] = cases

    # ---- full-vocab extras: text prompts, tokenizer, perplexity
    if tok is not None:
        tg = []
        for text in TEXT_PROMPTS:
            ids = tok(text).input_ids
            kw = dict(max_new_tokens=24, do_sample=False, pad_token_id=50256)
            try:
                p, o = find_case("text:" + text, 0, kw, prompt=ids)
            except RuntimeError:
                continue
            tg.append({"prompt_text": text, "prompt_ids": p, "kwargs": kw, "output": o})
            if len(tg) == 3:
                break
        if len(tg) < 3:
            raise RuntimeError(f"{name}: fewer than 3 text prompts passed the margin check")
        exp["text_greedy"] = tg
        exp["tokenizer"] = [{"text": t, "ids": tok(t).input_ids} for t in TOKENIZER_TEXTS]
        text = open(ppl_path, encoding="utf-8").read()
        ids = torch.tensor([tok(text).input_ids], dtype=torch.long)
        hf_loss_check(m64, ids, NP)
        ppl = []
        for S in (NP // 2, NP):
            x, nt, nw = perplexity(m64, ids, NP, S)
            x32, _, _ = perplexity(m32, ids, NP, S)
            ppl.append({"file": "ppl.txt", "stride": S, "max_length": NP, "perplexity": x,
                        "n_text_tokens": ids.size(1), "n_loss_tokens": nt, "windows": nw})
            stats["fp32_ppl_err_rel"] = max(stats.get("fp32_ppl_err_rel", 0.0), abs(x32 - x) / x)
        exp["perplexity"] = ppl

    # ---- logits (last), with float32 error and activation-discrimination stats
    lg = []
    for i, L in enumerate([1, 7, NP // 2]):
        p = rand_prompt(f"logits{i}", 0, L)
        ref = last_logits(m64, p)
        stats["fp32_logits_err_rel"] = max(stats["fp32_logits_err_rel"], rel_err(last_logits(m32, p), ref))
        lg.append((p, ref))
    # how far a wrong-but-close activation would move the logits, in units of the test tolerance
    # (> 1: the logits cases alone catch an engine that computes that activation instead)
    act = cfg.activation_function
    alt = {"gelu": "gelu_new", "gelu_python": "gelu_new", "gelu_10": "gelu", "gelu_new": "gelu",
           "gelu_fast": "gelu", "gelu_pytorch_tanh": "gelu", "gelu_python_tanh": "gelu",
           "gelu_accurate": "gelu", "quick_gelu": "gelu_new", "silu": "quick_gelu", "swish": "quick_gelu",
           "relu": "leaky_relu", "leaky_relu": "relu", "relu6": "relu", "relu2": "relu", "hardswish": "silu",
           "mish": "silu", "sigmoid": "tanh", "tanh": "sigmoid", "laplace": "sigmoid", "sqrtsoftplus": "relu",
           "linear": "relu"}.get(act)
    if alt:
        malt = copy.deepcopy(m64)
        for blk in malt.transformer.h:
            blk.mlp.act = ACT2FN[alt]
        worst = 0.0
        for p, ref in lg:
            tol = LOGIT_ATOL * max(1.0, ref.abs().max().item()) + LOGIT_RTOL * ref.abs()
            worst = max(worst, ((last_logits(malt, p) - ref).abs() / tol).max().item())
        stats["wrong_activation"] = alt
        stats["wrong_activation_err_over_tol"] = worst
        del malt
    exp["stats"] = stats
    if notes:
        exp["notes"] = notes
    exp["logits"] = [{"prompt": p, "logits": ref.tolist()} for p, ref in lg]

    with open(os.path.join(folder, "expected.json"), "w") as f:
        json.dump(exp, f, separators=(",", ":"))
        f.write("\n")
    if spec["beams"]:
        write_beam_cases(spec, folder)
        write_batch_cases(spec, folder)
    for n in os.listdir(folder):  # safetensors writes 0600; make the tree uniformly readable
        if not os.path.islink(os.path.join(folder, n)):
            os.chmod(os.path.join(folder, n), 0o644)
    size = sum(os.path.getsize(os.path.join(folder, n)) for n in os.listdir(folder)
               if not os.path.islink(os.path.join(folder, n)))
    n_cases = len(exp["greedy"]) + len(cases) + len(exp.get("text_greedy", []))
    return dict(name=name, size=size, secs=time.time() - t0, stats=stats, notes=notes, n_cases=n_cases,
                highlights=highlights(spec, cfg, gcfg))


def highlights(spec, cfg, gcfg):
    h = [f"V={cfg.vocab_size}", f"P={cfg.n_positions}", f"E={cfg.n_embd}", f"L={cfg.n_layer}",
         f"H={cfg.n_head}", cfg.activation_function, spec["dtype"], spec["layout"]]
    if spec["mask_dtype"]:
        h.append("attn.bias " + spec["mask_dtype"])
    if cfg.n_inner is not None:
        h.append(f"n_inner={cfg.n_inner}")
    if cfg.layer_norm_epsilon != 1e-5:
        h.append(f"eps={cfg.layer_norm_epsilon:g}")
    if not cfg.scale_attn_weights:
        h.append("no attn scale")
    if cfg.scale_attn_by_inverse_layer_idx:
        h.append("1/layer scale")
    if cfg.reorder_and_upcast_attn:
        h.append("reorder_and_upcast")
    if not cfg.tie_word_embeddings:
        h.append("untied lm_head")
    if spec["shard"]:
        h.append("sharded")
    if gcfg is None:
        h.append("no generation_config.json")
    elif spec["eos_mode"]:
        h.append(f"gen eos={gcfg.get('eos_token_id')}")
    if spec["tokenizer"]:
        h.append({"files": "vocab+merges", "json": "tokenizer.json"}[spec["tokenizer"]])
    return " ".join(h)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(REPO, "tests", "fixtures"))
    ap.add_argument("--only", nargs="*", help="regenerate only these fixtures")
    ap.add_argument("--beams-only", action="store_true",
                    help="only rewrite beam.json in the existing folders of the beams=True fixtures")
    ap.add_argument("--batch-only", action="store_true",
                    help="only rewrite batch.json in the existing folders of the beams=True fixtures")
    args = ap.parse_args()
    torch.set_default_dtype(torch.float32)
    torch.use_deterministic_algorithms(True)
    out = os.path.abspath(args.out)
    # --beams-only / --batch-only: rewrite one kind of case file in the existing folders.
    for flag, write, what in ((args.beams_only, write_beam_cases, "beam"),
                              (args.batch_only, write_batch_cases, "batch")):
        if not flag:
            continue
        for s in FIXTURES:
            if s["beams"] and (not args.only or s["name"] in args.only):
                t0 = time.time()
                n = write(s, os.path.join(out, s["name"]))
                print(f"  {s['name']:<38} {n} {what} cases  {time.time() - t0:5.1f}s", flush=True)
    if args.beams_only or args.batch_only:
        return
    os.makedirs(out, exist_ok=True)

    # shared tokenizer files (model folders hold relative symlinks to these)
    tokdir = os.path.join(out, "gpt2-tokenizer")
    os.makedirs(tokdir, exist_ok=True)
    for n in ("vocab.json", "merges.txt"):
        shutil.copyfile(os.path.join(TOK_SRC, n), os.path.join(tokdir, n))
    t = GPT2TokenizerFast(vocab=os.path.join(tokdir, "vocab.json"), merges=os.path.join(tokdir, "merges.txt"))
    if len(t) != 50257:
        raise RuntimeError(f"tokenizer built from vocab.json/merges.txt has {len(t)} entries, expected 50257")
    t.backend_tokenizer.save(os.path.join(tokdir, "tokenizer.json"), pretty=False)

    # perplexity text: an excerpt of tinyshakespeare, cut at a line end
    src = open(SHAKESPEARE, encoding="utf-8").read()
    cut = src.rfind("\n", 0, PPL_CHARS) + 1
    ppl_path = os.path.join(out, "ppl.txt")
    with open(ppl_path, "w", encoding="utf-8", newline="") as f:
        f.write(src[:cut])

    specs = [s for s in FIXTURES if not args.only or s["name"] in args.only]
    if args.only and len(specs) != len(args.only):
        sys.exit(f"unknown fixture in --only; known: {[s['name'] for s in FIXTURES]}")
    results = []
    for s in specs:
        r = make_fixture(s, out, tokdir, ppl_path)
        results.append(r)
        st = r["stats"]
        print(f"  {r['name']:<38} {r['size'] / 1024:8.0f} KiB  {r['secs']:5.1f}s  "
              f"margin>={st['min_margin_rel']:.1e}  fp32 err {st['fp32_logits_err_rel']:.1e}", flush=True)

    print("\nfixture                                  size KiB  highlights")
    for r in results:
        print(f"{r['name']:<40} {r['size'] / 1024:8.0f}  {r['highlights']}")
    shared = sum(os.path.getsize(os.path.join(tokdir, n)) for n in os.listdir(tokdir)) + os.path.getsize(ppl_path)
    total = sum(r["size"] for r in results) + shared
    print(f"shared gpt2-tokenizer/ + ppl.txt: {shared / 1024:.0f} KiB; total written: {total / 1048576:.1f} MiB")
    acts = sorted({r["highlights"].split()[5] for r in results})
    print(f"activations covered ({len(acts)}): {', '.join(acts)}")
    print(f"ACT2FN entries skipped (learned parameters): {', '.join(sorted(ACTS_WITH_PARAMS))}")
    worst = max(r["stats"]["fp32_logits_err_rel"] for r in results)
    print(f"worst float32-vs-float64 last-logit error: {worst:.2e} x max(1,max|ref|) "
          f"(test tolerance {LOGIT_ATOL:g} x max(1,max|ref|) + {LOGIT_RTOL:g} x |ref|)")
    wa = [(r["name"], r["stats"]["wrong_activation"], r["stats"]["wrong_activation_err_over_tol"])
          for r in results if "wrong_activation" in r["stats"]]
    if wa:
        print("swapping in a near-identical activation moves logits by (x tolerance): " +
              ", ".join(f"{n}->{a}: {x:.1f}x" for n, a, x in wa))
    pe = [r["stats"]["fp32_ppl_err_rel"] for r in results if "fp32_ppl_err_rel" in r["stats"]]
    if pe:
        print(f"worst float32-vs-float64 perplexity relative error: {max(pe):.1e}")
    print(f"min greedy margin over all fixtures: {min(r['stats']['min_margin_rel'] for r in results):.2e} "
          f"(required {MARGIN_REL:g}); generate cases: {sum(r['n_cases'] for r in results)}")
    for r in results:
        for n in r["notes"]:
            print(f"note: {r['name']}: {n}")
    if not args.only:
        write_readme(out, results, acts)


def write_readme(out, results, acts):
    lines = ["# gptc golden fixtures", "",
             "Generated by `python3 tools/make_fixtures.py` (deterministic; do not edit by hand) and checked",
             "by `tests/test_fixtures.py` against the gptc CLI. Each folder is a Hugging Face GPT2LMHeadModel",
             "checkpoint with random large-scale weights plus `expected.json`: transformers' float64 outputs",
             "computed from the weights as stored (see the docstrings of both scripts for the keys and the",
             "tolerances). `gpt2-tokenizer/` holds the GPT-2 tokenizer files the full-vocab fixtures link to;",
             "`ppl.txt` is the perplexity text (an excerpt of tinyshakespeare). Folders with a `beam.json` also",
             "hold beam-search cases, checked through the library by `tests/test_beam.c`.", "",
             "| fixture | highlights |", "| --- | --- |"]
    for r in results:
        lines.append(f"| `{r['name']}` | {r['highlights']} |")
    lines += ["", "Highlights: V vocab, P n_positions, E n_embd, L n_layer, H n_head; activation; stored dtype;",
              "layout `hf` = save_pretrained keys (`transformer.` prefix), `orig` = original gpt2 keys (no",
              "prefix, no lm_head, `h.N.attn.bias` mask + `h.N.attn.masked_bias` buffers to ignore).", "",
              f"Activations covered ({len(acts)}): " + ", ".join(f"`{a}`" for a in acts) + ".", ""]
    with open(os.path.join(out, "README.md"), "w") as f:
        f.write("\n".join(lines))


if __name__ == "__main__":
    main()
