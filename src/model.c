/*
 * model.c - loading a Hugging Face GPT-2 checkpoint folder into memory.
 *
 * Accepts model.safetensors or a sharded checkpoint (model.safetensors.index.json
 * naming its shards), weights in F32/F16/BF16, and both key layouts found on
 * the Hub: "transformer.h.0.attn.c_attn.weight" (save_pretrained) and
 * "h.0.attn.c_attn.weight" (the original gpt2 ... gpt2-xl uploads, whose
 * h.N.attn.bias / masked_bias buffers are ignored). Weights are converted to
 * fp32 in one arena; Conv1D matrices are transposed to [out][in] (model.h says
 * why). Shapes are checked against config.json before anything is copied.
 */
#include <cjson/cJSON.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "backend.h"
#include "model.h"
#include "safetensors.h"

gptc_model_params gptc_model_default_params(void) {
    return (gptc_model_params){.n_threads = 0, .backend = NULL, .dtype = GPTC_DTYPE_F16};
}

int gptc_has_cuda(void) {
#ifdef GPTC_HAVE_CUDA
    return 1;
#else
    return 0;
#endif
}

/* Picks the backend named in params and prepares the weights for it. */
static gptc_status attach_backend(gptc_model *m, const gptc_model_params *p) {
    const char *name = p && p->backend ? p->backend : "auto";
    gptc_dtype dtype = p ? p->dtype : GPTC_DTYPE_F16;
    if (dtype != GPTC_DTYPE_F32 && dtype != GPTC_DTYPE_F16 && dtype != GPTC_DTYPE_BF16)
        return gptc_fail(GPTC_ERR_ARG, "dtype: unknown value %d", (int)dtype);
    if (strcmp(name, "cpu") == 0) m->backend = &gptc_cpu_backend;
    else if (strcmp(name, "cuda") == 0 || strcmp(name, "auto") == 0) {
#ifdef GPTC_HAVE_CUDA
        if (strcmp(name, "cuda") == 0 || gptc_cuda_available()) m->backend = &gptc_cuda_backend;
        else m->backend = &gptc_cpu_backend;
#else
        if (strcmp(name, "cuda") == 0)
            return gptc_fail(GPTC_ERR_UNSUPPORTED,
                             "backend: this gptc was built without CUDA (nvcc not found); use --backend cpu");
        m->backend = &gptc_cpu_backend;
#endif
    } else
        return gptc_fail(GPTC_ERR_ARG, "backend: unknown backend '%.32s' (cpu, cuda, auto)", name);
    m->device = p ? p->device : 0;
    if (m->device < 0 || (m->device != 0 && m->backend == &gptc_cpu_backend)) {
        m->backend = NULL;
        return m->device < 0 ? gptc_fail(GPTC_ERR_ARG, "device: %d is negative", m->device)
                             : gptc_fail(GPTC_ERR_ARG, "device: %d, but the cpu backend has only device 0 "
                                                       "(a GPU needs --backend cuda)", m->device);
    }
    gptc_status st = m->backend->model_init(m, dtype);
    if (st != GPTC_OK) m->backend = NULL;
    m->weight_bytes = m->backend != &gptc_cpu_backend && dtype != GPTC_DTYPE_F32 ? 2 : 4;
    return st;
}

static size_t layer_floats(const gptc_config *c) {
    size_t C = (size_t)c->n_embd, F = (size_t)c->n_inner;
    return 2 * C + 3 * C * C + 3 * C + C * C + C + 2 * C + F * C + F + C * F + C;
}

gptc_status gptc_model_alloc(gptc_model *m) {
    const gptc_config *c = &m->cfg;
    size_t C = (size_t)c->n_embd, V = (size_t)c->n_vocab, P = (size_t)c->n_ctx;
    size_t F = (size_t)c->n_inner, L = (size_t)c->n_layer;
    size_t total = V * C + P * C + 2 * C + (m->tied ? 0 : V * C) + L * layer_floats(c);
    m->layers = calloc(L, sizeof *m->layers);
    /* 64-byte alignment keeps every vector load of the kernels aligned-friendly. */
    size_t bytes = (total * sizeof(float) + 63) & ~(size_t)63;
    m->arena = aligned_alloc(64, bytes);
    if (!m->layers || !m->arena)
        return gptc_fail(GPTC_ERR_NOMEM, "out of memory allocating %zu MB of weights",
                         bytes >> 20);
    m->arena_len = total;
    float *p = m->arena;
#define TAKE(ptr, n) (ptr = p, p += (n))
    TAKE(m->wte, V * C);
    TAKE(m->wpe, P * C);
    TAKE(m->lnf_w, C);
    TAKE(m->lnf_b, C);
    if (m->tied) m->lm_head = m->wte;
    else TAKE(m->lm_head, V * C);
    for (size_t l = 0; l < L; l++) {
        gptc_layer *y = &m->layers[l];
        TAKE(y->ln1_w, C);
        TAKE(y->ln1_b, C);
        TAKE(y->attn_w, 3 * C * C);
        TAKE(y->attn_b, 3 * C);
        TAKE(y->proj_w, C * C);
        TAKE(y->proj_b, C);
        TAKE(y->ln2_w, C);
        TAKE(y->ln2_b, C);
        TAKE(y->fc_w, F * C);
        TAKE(y->fc_b, F);
        TAKE(y->mproj_w, C * F);
        TAKE(y->mproj_b, C);
    }
#undef TAKE
    return GPTC_OK;
}

/* ---- reading tensors ---- */

typedef struct {
    st_file *files;
    size_t n_files;
    const char *prefix; /* "transformer." or "" */
} checkpoint;

static float half_to_float(uint16_t h) {
    uint32_t sign = (uint32_t)(h >> 15) << 31, exp = (h >> 10) & 31, man = h & 1023, bits;
    if (exp == 0) {
        if (man == 0) bits = sign;
        else { /* subnormal: renormalise */
            exp = 113;
            while (!(man & 1024)) {
                man <<= 1;
                exp--;
            }
            bits = sign | (exp << 23) | ((man & 1023) << 13);
        }
    } else if (exp == 31) bits = sign | 0x7f800000u | (man << 13);
    else bits = sign | ((exp + 112) << 23) | (man << 13);
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

static inline float load_elem(const st_tensor *t, size_t i) {
    const uint8_t *p = t->data;
    switch (t->dtype) {
    case ST_F32: {
        float f;
        memcpy(&f, p + 4 * i, 4);
        return f;
    }
    case ST_F16: {
        uint16_t h;
        memcpy(&h, p + 2 * i, 2);
        return half_to_float(h);
    }
    default: { /* ST_BF16: the top half of an fp32 */
        uint16_t h;
        memcpy(&h, p + 2 * i, 2);
        uint32_t bits = (uint32_t)h << 16;
        float f;
        memcpy(&f, &bits, 4);
        return f;
    }
    }
}

static const st_tensor *find_tensor(const checkpoint *ck, const char *name, const char **file) {
    for (size_t i = 0; i < ck->n_files; i++) {
        const st_tensor *t = st_find(&ck->files[i], name);
        if (t) {
            *file = ck->files[i].path;
            return t;
        }
    }
    return NULL;
}

/*
 * Copies tensor `name` (without the layout prefix) of shape (d0[, d1]) into
 * dst as fp32. With `transpose`, a (d0, d1) tensor is stored as (d1, d0).
 */
static gptc_status read_tensor(const checkpoint *ck, const char *name, int ndim, int64_t d0,
                               int64_t d1, int transpose, float *dst, int n_threads) {
    char full[256];
    snprintf(full, sizeof full, "%s%s", ck->prefix, name);
    const char *file = NULL;
    const st_tensor *t = find_tensor(ck, full, &file);
    if (!t) return gptc_fail(GPTC_ERR_FORMAT, "%s: missing tensor '%s'", ck->files[0].path, full);
    if (t->dtype != ST_F32 && t->dtype != ST_F16 && t->dtype != ST_BF16)
        return gptc_fail(GPTC_ERR_UNSUPPORTED, "%s: tensor '%s' has dtype %s (gptc reads F32, F16, BF16)",
                         file, full, st_dtype_name(t->dtype));
    int ok = t->ndim == ndim && t->shape[0] == d0 && (ndim == 1 || t->shape[1] == d1);
    if (!ok) {
        char got[128] = "", *g = got;
        for (int i = 0; i < t->ndim && g < got + sizeof got - 24; i++)
            g += snprintf(g, 24, "%s%lld", i ? ", " : "", (long long)t->shape[i]);
        if (ndim == 1)
            return gptc_fail(GPTC_ERR_FORMAT, "%s: tensor '%s' has shape [%s], config.json implies [%lld]",
                             file, full, got, (long long)d0);
        return gptc_fail(GPTC_ERR_FORMAT, "%s: tensor '%s' has shape [%s], config.json implies [%lld, %lld]",
                         file, full, got, (long long)d0, (long long)d1);
    }
    if (!dst) return GPTC_OK; /* checking pass, before the arena exists */
    size_t n = t->numel;
    if (!transpose) {
        if (t->dtype == ST_F32) memcpy(dst, t->data, n * sizeof(float));
        else {
#pragma omp parallel for num_threads(n_threads) schedule(static) if (n > (1u << 16))
            for (size_t i = 0; i < n; i++) dst[i] = load_elem(t, i);
        }
        return GPTC_OK;
    }
    /* Transpose in 32x32 tiles so both sides stay in cache. */
    size_t R = (size_t)d0, K = (size_t)d1;
#pragma omp parallel for num_threads(n_threads) schedule(static) if (n > (1u << 16))
    for (size_t r0 = 0; r0 < R; r0 += 32)
        for (size_t k0 = 0; k0 < K; k0 += 32)
            for (size_t r = r0; r < r0 + 32 && r < R; r++)
                for (size_t k = k0; k < k0 + 32 && k < K; k++) dst[k * R + r] = load_elem(t, r * K + k);
    return GPTC_OK;
}

static gptc_status read_weights(gptc_model *m, const checkpoint *ck) {
    const gptc_config *c = &m->cfg;
    int64_t C = c->n_embd, V = c->n_vocab, P = c->n_ctx, F = c->n_inner;
    int nt = m->n_threads;
    gptc_status st;
#define READ(name, nd, a, b, tr, dst)                                                              \
    if ((st = read_tensor(ck, name, nd, a, b, tr, dst, nt)) != GPTC_OK) return st
    READ("wte.weight", 2, V, C, 0, m->wte);
    READ("wpe.weight", 2, P, C, 0, m->wpe);
    READ("ln_f.weight", 1, C, 0, 0, m->lnf_w);
    READ("ln_f.bias", 1, C, 0, 0, m->lnf_b);
    char name[128];
    gptc_layer none = {0}; /* all NULL: the checking pass (no arena yet) */
    for (int l = 0; l < c->n_layer; l++) {
        gptc_layer *y = m->layers ? &m->layers[l] : &none;
#define LREAD(suffix, nd, a, b, tr, dst)                                                           \
    snprintf(name, sizeof name, "h.%d.%s", l, suffix);                                             \
    READ(name, nd, a, b, tr, dst)
        LREAD("ln_1.weight", 1, C, 0, 0, y->ln1_w);
        LREAD("ln_1.bias", 1, C, 0, 0, y->ln1_b);
        LREAD("attn.c_attn.weight", 2, C, 3 * C, 1, y->attn_w);
        LREAD("attn.c_attn.bias", 1, 3 * C, 0, 0, y->attn_b);
        LREAD("attn.c_proj.weight", 2, C, C, 1, y->proj_w);
        LREAD("attn.c_proj.bias", 1, C, 0, 0, y->proj_b);
        LREAD("ln_2.weight", 1, C, 0, 0, y->ln2_w);
        LREAD("ln_2.bias", 1, C, 0, 0, y->ln2_b);
        LREAD("mlp.c_fc.weight", 2, C, F, 1, y->fc_w);
        LREAD("mlp.c_fc.bias", 1, F, 0, 0, y->fc_b);
        LREAD("mlp.c_proj.weight", 2, F, C, 1, y->mproj_w);
        LREAD("mlp.c_proj.bias", 1, C, 0, 0, y->mproj_b);
#undef LREAD
        /* The backend's upload is counted as one more layer's worth. */
        if (m->layers && m->progress) m->progress((float)(l + 1) / (float)(c->n_layer + 2), m->progress_user);
    }
    if (!m->tied) {
        /* lm_head lives outside the "transformer." prefix. */
        checkpoint bare = *ck;
        bare.prefix = "";
        if ((st = read_tensor(&bare, "lm_head.weight", 2, V, C, 0, m->lm_head, nt)) != GPTC_OK)
            return st;
    }
#undef READ
    return GPTC_OK;
}

/* Opens the shards named by model.safetensors.index.json's weight_map. */
static gptc_status open_sharded(const char *dir, const char *index_path, checkpoint *ck) {
    cJSON *j = NULL;
    gptc_status st = gptc_read_json(index_path, &j);
    if (st != GPTC_OK) return st;
    const cJSON *map = cJSON_GetObjectItemCaseSensitive(j, "weight_map");
    if (!cJSON_IsObject(map)) {
        cJSON_Delete(j);
        return gptc_fail(GPTC_ERR_FORMAT, "%s: missing or malformed 'weight_map'", index_path);
    }
    size_t n = 0;
    for (const cJSON *e = map->child; e; e = e->next) n++;
    ck->files = calloc(n ? n : 1, sizeof *ck->files);
    if (!ck->files) {
        cJSON_Delete(j);
        return gptc_fail(GPTC_ERR_NOMEM, "out of memory");
    }
    for (const cJSON *e = map->child; e; e = e->next) {
        if (!cJSON_IsString(e) || !e->valuestring[0] || strchr(e->valuestring, '/') ||
            strcmp(e->valuestring, "..") == 0) {
            st = gptc_fail(GPTC_ERR_FORMAT, "%s: weight_map entry '%s' is not a file name in the folder",
                           index_path, e->string);
            break;
        }
        int seen = 0;
        for (size_t i = 0; i < ck->n_files && !seen; i++) {
            const char *p = strrchr(ck->files[i].path, '/');
            seen = strcmp(p ? p + 1 : ck->files[i].path, e->valuestring) == 0;
        }
        if (seen) continue;
        char *path = gptc_path_join(dir, e->valuestring);
        if (!path) {
            st = gptc_fail(GPTC_ERR_NOMEM, "out of memory");
            break;
        }
        st = st_open(path, &ck->files[ck->n_files]);
        free(path);
        if (st != GPTC_OK) break;
        ck->n_files++;
    }
    if (st == GPTC_OK && ck->n_files == 0)
        st = gptc_fail(GPTC_ERR_FORMAT, "%s: 'weight_map' names no shards", index_path);
    cJSON_Delete(j);
    return st;
}

static void close_checkpoint(checkpoint *ck) {
    for (size_t i = 0; i < ck->n_files; i++) st_close(&ck->files[i]);
    free(ck->files);
}

static int resolve_threads(int n) {
    if (n > 0) return n;
    int p = omp_get_num_procs();
    return p > 0 ? p : 1;
}

/*
 * Reads config.json into m and opens the checkpoint's safetensors files into
 * ck, checking every tensor gptc reads against the config (no weights are
 * copied: m has no arena yet). The caller closes ck, also on failure.
 */
static gptc_status open_checked(const char *dir, gptc_model *m, checkpoint *ck) {
    if (!dir || !*dir) return gptc_fail(GPTC_ERR_ARG, "model folder: empty path");
    if (!gptc_dir_exists(dir))
        return gptc_fail(GPTC_ERR_IO, gptc_file_exists(dir) ? "%s: is a file, not a model folder"
                                                            : "%s: model folder does not exist",
                         dir);
    char *single = gptc_path_join(dir, "model.safetensors");
    char *index = gptc_path_join(dir, "model.safetensors.index.json");
    gptc_status st = GPTC_OK;
    if (!single || !index) st = gptc_fail(GPTC_ERR_NOMEM, "out of memory");
    else st = gptc_config_load(dir, &m->cfg, &m->act, &m->tied, &m->gen);
    if (st != GPTC_OK) goto done;
    if (gptc_file_exists(single)) {
        ck->files = calloc(1, sizeof *ck->files);
        if (!ck->files) {
            st = gptc_fail(GPTC_ERR_NOMEM, "out of memory");
            goto done;
        }
        if ((st = st_open(single, &ck->files[0])) != GPTC_OK) goto done;
        ck->n_files = 1;
    } else if (gptc_file_exists(index)) {
        if ((st = open_sharded(dir, index, ck)) != GPTC_OK) goto done;
    } else {
        st = gptc_fail(GPTC_ERR_IO, "%s: no model.safetensors or model.safetensors.index.json", dir);
        goto done;
    }
    const char *file;
    if (find_tensor(ck, "transformer.wte.weight", &file)) ck->prefix = "transformer.";
    else if (find_tensor(ck, "wte.weight", &file)) ck->prefix = "";
    else {
        st = gptc_fail(GPTC_ERR_FORMAT, "%s: missing tensor 'transformer.wte.weight' (or 'wte.weight')",
                       ck->files[0].path);
        goto done;
    }
    m->cfg.dtype = GPTC_DTYPE_F32;
    const st_tensor *wte = find_tensor(ck, ck->prefix[0] ? "transformer.wte.weight" : "wte.weight", &file);
    if (wte->dtype == ST_F16) m->cfg.dtype = GPTC_DTYPE_F16;
    if (wte->dtype == ST_BF16) m->cfg.dtype = GPTC_DTYPE_BF16;
    /* Check every tensor against config.json before allocating: a config
     * claiming a huge model must fail on the shapes, not on the allocation. */
    st = read_weights(m, ck);
done:
    free(single);
    free(index);
    return st;
}

gptc_status gptc_model_load(const char *dir, const gptc_model_params *params, gptc_model **out) {
    *out = NULL;
    gptc_model *m = calloc(1, sizeof *m);
    if (!m) return gptc_fail(GPTC_ERR_NOMEM, "out of memory");
    m->n_threads = resolve_threads(params ? params->n_threads : 0);
    if (params) m->progress = params->progress, m->progress_user = params->progress_user;
    checkpoint ck = {0};
    gptc_status st = open_checked(dir, m, &ck);
    if (st == GPTC_OK) st = gptc_model_alloc(m);
    if (st == GPTC_OK) st = read_weights(m, &ck);
    close_checkpoint(&ck);
    if (st == GPTC_OK) st = attach_backend(m, params);
    if (st != GPTC_OK) {
        gptc_model_free(m);
        return st;
    }
    if (m->progress) m->progress(1.0f, m->progress_user);
    *out = m;
    return GPTC_OK;
}

gptc_status gptc_model_inspect(const char *dir, gptc_model_info *out) {
    if (!out) return gptc_fail(GPTC_ERR_ARG, "gptc_model_inspect: out is NULL");
    *out = (gptc_model_info){0};
    gptc_model m = {0}; /* config and checks only: no arena, no backend */
    m.n_threads = 1;
    checkpoint ck = {0};
    gptc_status st = open_checked(dir, &m, &ck);
    if (st == GPTC_OK) {
        const gptc_config *c = &m.cfg;
        uint64_t C = (uint64_t)c->n_embd, F = (uint64_t)c->n_inner, V = (uint64_t)c->n_vocab;
        uint64_t L = (uint64_t)c->n_layer;
        out->config = *c;
        out->tied = m.tied;
        out->n_params = V * C + (uint64_t)c->n_ctx * C + 2 * C + (m.tied ? 0 : V * C) +
                        L * (uint64_t)layer_floats(c);
        out->n_matrix_params = V * C * (m.tied ? 1 : 2) + L * (4 * C * C + 2 * F * C);
        out->n_files = (uint32_t)ck.n_files;
        for (size_t f = 0; f < ck.n_files; f++) {
            out->file_bytes += ck.files[f].map_len;
            for (size_t t = 0; t < ck.files[f].n_tensors; t++) {
                st_dtype d = ck.files[f].tensors[t].dtype;
                out->n_tensors[d == ST_F32 ? 0 : d == ST_F16 ? 1 : d == ST_BF16 ? 2 : 3]++;
            }
        }
    }
    close_checkpoint(&ck);
    return st;
}

static void fill_uniform(float *p, size_t n, float scale, uint64_t seed, int nt) {
#pragma omp parallel for num_threads(nt) schedule(static)
    for (size_t i = 0; i < n; i++) {
        uint64_t r = gptc_splitmix64(seed * 0x100000001b3ull + i);
        p[i] = scale * ((float)(r >> 40) * (1.0f / 16777216.0f) * 2.0f - 1.0f);
    }
}

gptc_status gptc_model_from_shape(const char *shape, uint64_t seed, const gptc_model_params *params,
                                  gptc_model **out) {
    static const struct {
        const char *name;
        int layer, embd, head;
    } shapes[] = {{"gpt2", 12, 768, 12},
                  {"gpt2-medium", 24, 1024, 16},
                  {"gpt2-large", 36, 1280, 20},
                  {"gpt2-xl", 48, 1600, 25},
                  {"tiny", 2, 64, 4},
                  /* 64-wide heads (the CUDA tensor-core attention) in rows
                   * of 384 fp16 bytes, not a multiple of 256 (tests) */
                  {"tiny64", 2, 192, 3}};
    *out = NULL;
    int k = -1;
    for (int i = 0; i < (int)(sizeof shapes / sizeof shapes[0]); i++)
        if (shape && strcmp(shape, shapes[i].name) == 0) k = i;
    if (k < 0)
        return gptc_fail(GPTC_ERR_ARG,
                         "--shape: unknown shape '%s' (gpt2, gpt2-medium, gpt2-large, gpt2-xl, tiny, tiny64)",
                         shape ? shape : "");
    gptc_model *m = calloc(1, sizeof *m);
    if (!m) return gptc_fail(GPTC_ERR_NOMEM, "out of memory");
    m->n_threads = resolve_threads(params ? params->n_threads : 0);
    gptc_config *c = &m->cfg;
    *c = (gptc_config){.n_vocab = 50257, .n_ctx = 1024, .n_embd = shapes[k].embd,
                       .n_layer = shapes[k].layer, .n_head = shapes[k].head,
                       .layer_norm_epsilon = 1e-5f, .scale_attn_weights = 1,
                       .bos_token_id = 50256, .eos_token_id = 50256};
    snprintf(c->activation, sizeof c->activation, "gelu_new");
    m->act = ACT_GELU_TANH;
    m->tied = 1;
    m->gen = gptc_gen_defaults_none();
    m->gen.eos_ids[0] = 50256;
    m->gen.n_eos = 1;
    gptc_status st = gptc_config_check(c, shape);
    if (st == GPTC_OK) st = gptc_model_alloc(m);
    if (st != GPTC_OK) {
        gptc_model_free(m);
        return st;
    }
    fill_uniform(m->arena, m->arena_len, 0.04f, seed, m->n_threads);
    /* Layer norms start at weight 1, bias 0, like a fresh GPT2LMHeadModel. */
    size_t C = (size_t)c->n_embd;
    for (size_t i = 0; i < C; i++) m->lnf_w[i] = 1, m->lnf_b[i] = 0;
    for (int l = 0; l < c->n_layer; l++)
        for (size_t i = 0; i < C; i++) {
            gptc_layer *y = &m->layers[l];
            y->ln1_w[i] = y->ln2_w[i] = 1;
            y->ln1_b[i] = y->ln2_b[i] = 0;
        }
    if ((st = attach_backend(m, params)) != GPTC_OK) {
        gptc_model_free(m);
        return st;
    }
    *out = m;
    return GPTC_OK;
}

void gptc_model_free(gptc_model *m) {
    if (!m) return;
    if (m->backend) m->backend->model_free(m);
    free(m->arena);
    free(m->layers);
    free(m);
}

const gptc_config *gptc_model_config(const gptc_model *m) { return &m->cfg; }
int gptc_model_n_threads(const gptc_model *m) { return m->n_threads; }
const char *gptc_model_backend(const gptc_model *m) { return m->backend->name; }

size_t gptc_model_weight_bytes(const gptc_model *m) {
    /* Each decode step reads every layer and the LM head once; of wpe and wte
     * (when untied) only one row, which is negligible. */
    const gptc_config *c = &m->cfg;
    size_t per_layer = layer_floats(c);
    return (size_t)m->weight_bytes *
           ((size_t)c->n_layer * per_layer + (size_t)c->n_vocab * c->n_embd + 2 * (size_t)c->n_embd);
}
