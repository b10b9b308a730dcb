/*
 * beam.c - beam search with the exact semantics of transformers' generate()
 * (transformers 5.x: _beam_search and its helpers), for one prompt.
 *
 * One step, as transformers does it:
 *  1. each running beam's logits -> log_softmax -> the logits processors
 *     (repetition penalty, no-repeat-ngram, min-new-tokens) on those
 *     log-probabilities -> plus the beam's running score;
 *  2. the best K = max(2, 1 + n_eos) * num_beams of all beams x vocabulary
 *     (K > num_beams so that num_beams of them can run on even if the best
 *     ones all end);
 *  3. a candidate "stops" on an eos id or at the maximum length. The best
 *     num_beams that do not stop are the next running beams;
 *  4. the candidates among the first num_beams that stop compete with the
 *     num_beams finished hypotheses kept so far, scored
 *     sum / (new_len ^ length_penalty); the best num_beams stay;
 *  5. the search ends when early_stopping says no running beam can improve
 *     on the finished ones, when num_beams are finished with early_stopping
 *     true, or when every candidate stopped (the maximum length).
 *
 * Arithmetic: transformers holds the scores in float32 tensors and excludes
 * entries by adding -1e9 (not -inf), which in float32 swallows small
 * differences (-1e9f + -3.2f == -1e9f). The arithmetic below is float32, with
 * the same operations in the same order (a float32 tensor divided by a Python
 * float divides by that float rounded to float32, measured), so that every
 * comparison comes out as in torch, given the same logits. Only log_softmax
 * sums in double where torch sums in float32: a difference of about an ulp,
 * far below the difference between two backends' logits.
 *
 * Ties: torch.topk on the CPU selects with libstdc++'s std::partial_sort or
 * std::nth_element + std::sort, which leave equal values in an unspecified
 * (and in practice scrambled) order. Here equal values rank by index, lower
 * first. For one prompt the order of ties does not reach the output: exact
 * ties between finite scores of different sequences are vanishingly rare, and
 * the values that tie often - those masked with -1e9 and the -1e9 placeholders
 * of empty finished slots - are always ranked below every real hypothesis, and
 * the search only ends once num_beams real hypotheses are finished (early
 * stopping needs them, and at the maximum length the best num_beams candidates
 * all finish). Only a step where fewer than K candidates have finite scores
 * (a vocabulary nearly all banned) could let tie order matter.
 *
 * K/V cache. On a backend with a paged cache (kv_eval) the beams are the
 * sequences of one pass: each step reads the weights once for all of them.
 * A beam is a table of blocks; the prompt is evaluated once and its blocks
 * are shared by every beam, and so are the blocks of any common prefix. When
 * the new running beams are chosen, each takes its parent's table (the
 * blocks change holders, nothing is copied); only the block that the next
 * token writes into, when another beam still holds it, is copied first
 * (copy on write: at most block_size - 1 rows per beam and step).
 *
 * Without a paged cache (CUDA, for now): one session per beam; a beam that
 * continues an old one takes over its session, and only further children of
 * the same parent copy the whole cache (gptc_session_copy).
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "generate.h"
#include "internal.h"
#include "kvblocks.h"
#include "model.h"
#include "sampling.h"

/* transformers' exclusion value; -1e9 is exact in float32. */
#define MASK (-1.0e9f)

/* Swaps two buffers of the same type: double buffering, no copies. */
#define SWAP(x, y)                                                                                 \
    do {                                                                                           \
        void *t_ = (void *)(x);                                                                    \
        (x) = (y);                                                                                 \
        (y) = t_;                                                                                  \
    } while (0)

/* Whether entry (va, ia) ranks before (vb, ib) in torch.topk's order: larger
 * first, NaN largest of all; ties by index, lower first (see above). */
static int ranks_before(float va, size_t ia, float vb, size_t ib) {
    int na = isnan(va), nb = isnan(vb);
    if (na != nb) return na;
    if (!na && va != vb) return va > vb;
    return ia < ib;
}

/* Sift-down in a heap whose root is the entry that ranks last. */
static void heap_sift(const float *x, size_t *h, size_t n, size_t i) {
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, w = i;
        if (l < n && ranks_before(x[h[w]], h[w], x[h[l]], h[l])) w = l;
        if (r < n && ranks_before(x[h[w]], h[w], x[h[r]], h[r])) w = r;
        if (w == i) return;
        size_t t = h[i];
        h[i] = h[w];
        h[w] = t;
        i = w;
    }
}

/* torch.topk(x[0..n), k) with 1 <= k <= n: the indices of the k entries that
 * rank first, in rank order. O(n log k): a heap of the k best seen so far. */
static void topk(const float *x, size_t n, size_t k, size_t *idx) {
    for (size_t i = 0; i < k; i++) idx[i] = i;
    for (size_t j = k / 2; j-- > 0;) heap_sift(x, idx, k, j);
    for (size_t i = k; i < n; i++)
        if (ranks_before(x[i], i, x[idx[0]], idx[0])) {
            idx[0] = i;
            heap_sift(x, idx, k, 0);
        }
    /* Heap sort: the last-ranked entry goes to the end each time. */
    for (size_t end = k; end > 1; end--) {
        size_t t = idx[0];
        idx[0] = idx[end - 1];
        idx[end - 1] = t;
        heap_sift(x, idx, end - 1, 0);
    }
}

/* topk over the nb rows of x (nb, V) as one vector of nb * V: each row's
 * best k (or all V), a row a thread, then the best k of those lists - the
 * same entries in the same order, the order being total (ties by index).
 * rows: (nb, min(k, V)) scratch. */
#define TOPK_ROWS_MAX 64
static void topk_rows(const float *x, size_t nb, size_t V, size_t k, size_t *rows, size_t *idx, int nt) {
    if (nb > TOPK_ROWS_MAX) {
        topk(x, nb * V, k, idx);
        return;
    }
    size_t kr = k < V ? k : V, pos[TOPK_ROWS_MAX] = {0};
#pragma omp parallel for num_threads(nt) schedule(static) if (nb > 1 && nt > 1)
    for (size_t i = 0; i < nb; i++) {
        topk(x + i * V, V, kr, rows + i * kr);
        for (size_t j = 0; j < kr; j++) rows[i * kr + j] += i * V;
    }
    /* k times the best of the lists' heads (k and nb are small) */
    for (size_t j = 0; j < k; j++) {
        size_t best = SIZE_MAX, bi = 0;
        for (size_t i = 0; i < nb; i++) {
            if (pos[i] == kr) continue;
            size_t c = rows[i * kr + pos[i]];
            if (best == SIZE_MAX || ranks_before(x[c], c, x[best], best)) best = c, bi = i;
        }
        idx[j] = best;
        pos[bi]++;
    }
}

/* torch.log_softmax in float32: (x - max) - log(sum(exp(x - max))). */
static void log_softmax(float *x, int V) {
    float mx = -INFINITY;
    for (int v = 0; v < V; v++)
        if (x[v] > mx) mx = x[v];
    double sum = 0;
    for (int v = 0; v < V; v++) sum += exp((double)(x[v] - mx));
    float lse = (float)log(sum);
    for (int v = 0; v < V; v++) x[v] = (x[v] - mx) - lse;
}

/* Python's `n ** length_penalty` (a double), rounded to float32 as torch does
 * when it divides a float32 tensor by it. */
static float length_divisor(size_t n, double length_penalty) {
    return (float)pow((double)n, length_penalty);
}

typedef struct {
    const gptc_generate_params *p;
    int V, nb;
    size_t K, n_prompt, max_new, total;
    gptc_session **sess, **sess_next; /* (nb) the running beams' caches */
    int32_t *seq, *seq_next;          /* (nb, total) running beams: prompt, then new tokens */
    float *score, *score_next;        /* (nb) running scores: sums of processed log-probs */
    size_t *parent;                   /* (nb) the old beam each new running beam extends */
    int32_t *fin, *fin_next;          /* (nb, max_new) finished slots' new tokens */
    size_t *fin_len, *fin_len_next;
    float *fin_score, *fin_score_next;
    unsigned char *fin_done, *fin_done_next; /* the slot holds a finished hypothesis */
    float *lp;                        /* (nb, V) processed log-probs + running scores */
    size_t *cand;                     /* (K) candidates, best first: beam * V + token */
    size_t *row_cand;                 /* (nb, min(K, V)) each beam's best, as cand */
    float *cand_score;                /* (K) */
    unsigned char *hits;              /* (K) the candidate stops (eos, maximum length) */
    float *tmp;                       /* (nb + K) */
    size_t *sel;                      /* (nb + K) */
    int *claim;                       /* (nb) */
    unsigned char *seen;              /* (V) zeroed scratch for the repetition penalty */
    /* the paged cache */
    int paged;
    void *kv;
    kv_blocks blocks;
    int32_t bs, max_blocks;           /* positions per block; blocks of a whole sequence */
    int32_t *tab, *tab_next;          /* (nb, max_blocks) each beam's blocks */
    int32_t *n_tab, *n_tab_next;      /* (nb) */
    int32_t *pass;                    /* ids, pos, seq, rows: (4, max(n_prompt, nb)) */
    const int32_t **tables;           /* (nb) */
} beam_state;

#define BEAM_BLOCK 16

static void beam_free(beam_state *b, gptc_model *m) {
    if (b->sess)
        for (int i = 0; i < b->nb; i++) gptc_session_free(b->sess[i]);
    if (b->kv) m->backend->kv_free(m, b->kv);
    kvb_destroy(&b->blocks);
    free(b->tab);
    free(b->tab_next);
    free(b->n_tab);
    free(b->n_tab_next);
    free(b->pass);
    free(b->tables);
    void *bufs[] = {b->sess,      b->sess_next,      b->seq,        b->seq_next, b->score,
                    b->score_next, b->parent,        b->fin,        b->fin_next, b->fin_len,
                    b->fin_len_next, b->fin_score,   b->fin_score_next, b->fin_done,
                    b->fin_done_next, b->lp,         b->cand,       b->cand_score, b->hits,
                    b->tmp,       b->sel,            b->claim,      b->seen,     b->row_cand};
    for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++) free(bufs[i]);
}

static gptc_status beam_alloc(beam_state *b, gptc_model *m) {
    size_t nb = (size_t)b->nb, K = b->K, V = (size_t)b->V;
    b->sess = calloc(nb, sizeof *b->sess);
    b->sess_next = calloc(nb, sizeof *b->sess_next);
    b->seq = malloc(nb * b->total * sizeof *b->seq);
    b->seq_next = malloc(nb * b->total * sizeof *b->seq_next);
    b->score = malloc(nb * sizeof *b->score);
    b->score_next = malloc(nb * sizeof *b->score_next);
    b->parent = malloc(nb * sizeof *b->parent);
    b->fin = malloc(nb * b->max_new * sizeof *b->fin);
    b->fin_next = malloc(nb * b->max_new * sizeof *b->fin_next);
    b->fin_len = calloc(nb, sizeof *b->fin_len);
    b->fin_len_next = calloc(nb, sizeof *b->fin_len_next);
    b->fin_score = malloc(nb * sizeof *b->fin_score);
    b->fin_score_next = malloc(nb * sizeof *b->fin_score_next);
    b->fin_done = calloc(nb, 1);
    b->fin_done_next = calloc(nb, 1);
    b->lp = malloc(nb * V * sizeof *b->lp);
    b->cand = malloc(K * sizeof *b->cand);
    b->row_cand = malloc(nb * K * sizeof *b->row_cand);
    b->cand_score = malloc(K * sizeof *b->cand_score);
    b->hits = malloc(K);
    b->tmp = malloc((nb + K) * sizeof *b->tmp);
    b->sel = malloc((nb + K) * sizeof *b->sel);
    b->claim = malloc(nb * sizeof *b->claim);
    b->seen = calloc(V, 1);
    if (!b->sess || !b->sess_next || !b->seq || !b->seq_next || !b->score || !b->score_next ||
        !b->parent || !b->fin || !b->fin_next || !b->fin_len || !b->fin_len_next ||
        !b->fin_score || !b->fin_score_next || !b->fin_done || !b->fin_done_next || !b->lp ||
        !b->cand || !b->cand_score || !b->hits || !b->tmp || !b->sel || !b->claim || !b->seen ||
        !b->row_cand)
        return gptc_fail(GPTC_ERR_NOMEM, "out of memory for %d beams", b->nb);
    if (b->paged) {
        /* Worst case: no beam shares more than the prompt's full blocks,
         * plus one copy-on-write block per beam in flight. */
        int32_t bs = b->bs = BEAM_BLOCK;
        b->max_blocks = (int32_t)((b->total + (size_t)bs - 1) / (size_t)bs);
        int32_t shared = (int32_t)(b->n_prompt / (size_t)bs);
        int64_t n_blocks = shared + (int64_t)nb * (b->max_blocks - shared + 1);
        size_t n_pass = b->n_prompt > nb ? b->n_prompt : nb;
        b->tab = malloc(nb * (size_t)b->max_blocks * sizeof *b->tab);
        b->tab_next = malloc(nb * (size_t)b->max_blocks * sizeof *b->tab_next);
        b->n_tab = calloc(nb, sizeof *b->n_tab);
        b->n_tab_next = calloc(nb, sizeof *b->n_tab_next);
        b->pass = malloc(4 * n_pass * sizeof *b->pass);
        b->tables = malloc(nb * sizeof *b->tables);
        if (!b->tab || !b->tab_next || !b->n_tab || !b->n_tab_next || !b->pass || !b->tables)
            return gptc_fail(GPTC_ERR_NOMEM, "out of memory for %d beams", b->nb);
        if (n_blocks > INT32_MAX) return gptc_fail(GPTC_ERR_NOMEM, "out of memory for %d beams", b->nb);
        gptc_status st = kvb_init(&b->blocks, (int32_t)n_blocks, bs);
        if (st == GPTC_OK) st = m->backend->kv_new(m, (int32_t)n_blocks, bs, &b->kv);
        return st;
    }
    for (size_t i = 0; i < nb; i++) {
        gptc_status st = gptc_session_new(m, (int32_t)b->total, &b->sess[i]);
        if (st != GPTC_OK) return st;
    }
    return GPTC_OK;
}

/* Step 1 for one beam after its log_softmax: the processors. */
static void process(const beam_state *b, float *row, const int32_t *seq, size_t len) {
    const gptc_generate_params *p = b->p;
    if (p->repetition_penalty != 1.0f)
        proc_repetition_penalty(row, seq, len, p->repetition_penalty, b->seen);
    if (p->no_repeat_ngram_size > 0) proc_no_repeat_ngram(row, seq, len, p->no_repeat_ngram_size);
    if ((int64_t)(len - b->n_prompt) < p->min_new_tokens)
        for (int32_t e = 0; e < p->n_eos_token_ids; e++) row[p->eos_token_ids[e]] = -INFINITY;
}

static int is_eos(const gptc_generate_params *p, int32_t id) {
    for (int32_t e = 0; e < p->n_eos_token_ids; e++)
        if (p->eos_token_ids[e] == id) return 1;
    return 0;
}

/* Step 4: the finished slots after this step's candidates (cur = the
 * sequences' length before the step; unsat = early stopping still allows
 * improvement). */
static void update_finished(beam_state *b, size_t cur, int unsat) {
    const gptc_generate_params *p = b->p;
    size_t nb = (size_t)b->nb, V = (size_t)b->V, n_new = cur - b->n_prompt;
    int all_done = 1;
    for (size_t i = 0; i < nb; i++) all_done &= b->fin_done[i];
    float div = length_divisor(n_new + 1, p->length_penalty);
    for (size_t i = 0; i < nb; i++) b->tmp[i] = b->fin_score[i];
    for (size_t k = 0; k < b->K; k++) {
        /* Three separate float32 additions, as in transformers. */
        float s = b->cand_score[k] / div;
        if (all_done && p->early_stopping == GPTC_EARLY_STOPPING_TRUE) s += MASK;
        if (!unsat) s += MASK;
        if (!(b->hits[k] && k < nb)) s += MASK;
        b->tmp[nb + k] = s;
    }
    topk(b->tmp, nb + b->K, nb, b->sel);
    for (size_t i = 0; i < nb; i++) {
        size_t q = b->sel[i];
        int32_t *dst = b->fin_next + i * b->max_new;
        b->fin_score_next[i] = b->tmp[q];
        if (q < nb) {
            memcpy(dst, b->fin + q * b->max_new, b->fin_len[q] * sizeof *dst);
            b->fin_len_next[i] = b->fin_len[q];
            b->fin_done_next[i] = b->fin_done[q];
        } else {
            size_t k = q - nb, beam = b->cand[k] / V;
            memcpy(dst, b->seq + beam * b->total + b->n_prompt, n_new * sizeof *dst);
            dst[n_new] = (int32_t)(b->cand[k] % V);
            b->fin_len_next[i] = n_new + 1;
            b->fin_done_next[i] = b->hits[k] && k < nb;
        }
    }
    SWAP(b->fin, b->fin_next);
    SWAP(b->fin_len, b->fin_len_next);
    SWAP(b->fin_score, b->fin_score_next);
    SWAP(b->fin_done, b->fin_done_next);
}

/* Step 3: the next running beams, into seq_next / score_next / parent. */
static void next_running(beam_state *b, size_t cur) {
    size_t nb = (size_t)b->nb, V = (size_t)b->V;
    for (size_t k = 0; k < b->K; k++) b->tmp[k] = b->hits[k] ? b->cand_score[k] + MASK : b->cand_score[k];
    topk(b->tmp, b->K, nb, b->sel);
    for (size_t j = 0; j < nb; j++) {
        size_t k = b->sel[j], beam = b->cand[k] / V;
        int32_t *dst = b->seq_next + j * b->total;
        memcpy(dst, b->seq + beam * b->total, cur * sizeof *dst);
        dst[cur] = (int32_t)(b->cand[k] % V);
        b->score_next[j] = b->tmp[k];
        b->parent[j] = beam;
    }
}

/* Gives each new running beam the cache of the old beam it extends: the
 * first child takes the session over, later children copy it into sessions
 * that no child claimed. `first`: all old beams still hold the same prompt,
 * whose cache only session 0 has. */
static gptc_status reorder_caches(beam_state *b, int first) {
    size_t nb = (size_t)b->nb;
    for (size_t i = 0; i < nb; i++) b->claim[i] = -1;
    for (size_t j = 0; j < nb; j++) {
        size_t src = first ? 0 : b->parent[j];
        b->sess_next[j] = NULL;
        if (b->claim[src] < 0) {
            b->claim[src] = (int)j;
            b->sess_next[j] = b->sess[src];
        }
    }
    size_t f = 0;
    for (size_t j = 0; j < nb; j++) {
        if (b->sess_next[j]) continue;
        while (b->claim[f] >= 0) f++; /* as many unclaimed sessions as children without one */
        b->claim[f] = (int)nb;
        gptc_status st = gptc_session_copy(b->sess[f], b->sess[first ? 0 : b->parent[j]]);
        if (st != GPTC_OK) return st;
        b->sess_next[j] = b->sess[f];
    }
    SWAP(b->sess, b->sess_next);
    return GPTC_OK;
}

/* The paged cache's reorder: each new beam takes its parent's table, then
 * gets a block of its own for position `pos` (the one the next pass writes)
 * if it has none or shares it. */
static gptc_status reorder_tables(beam_state *b, gptc_model *m, int first, int32_t pos) {
    size_t nb = (size_t)b->nb, mb = (size_t)b->max_blocks;
    for (size_t j = 0; j < nb; j++) {
        size_t src = first ? 0 : b->parent[j];
        b->n_tab_next[j] = b->n_tab[src];
        for (int32_t k = 0; k < b->n_tab[src]; k++) {
            b->tab_next[j * mb + k] = b->tab[src * mb + k];
            kvb_retain(&b->blocks, b->tab[src * mb + k]);
        }
    }
    for (size_t i = 0; i < nb; i++)
        for (int32_t k = 0; k < b->n_tab[i]; k++) kvb_release(&b->blocks, b->tab[i * mb + k]);
    SWAP(b->tab, b->tab_next);
    SWAP(b->n_tab, b->n_tab_next);
    int32_t bi = pos / b->bs, rows = pos % b->bs;
    for (size_t j = 0; j < nb; j++) {
        int32_t *t = b->tab + j * mb;
        if (bi < b->n_tab[j] && b->blocks.refs[t[bi]] == 1) continue; /* its own: written in place */
        int32_t nbk = kvb_alloc(&b->blocks);
        if (nbk < 0) return gptc_fail(GPTC_ERR_NOMEM, "beam search: out of K/V cache blocks");
        if (bi < b->n_tab[j]) {
            gptc_status st = m->backend->kv_copy(m, b->kv, nbk, t[bi], rows);
            if (st != GPTC_OK) return st;
            kvb_release(&b->blocks, t[bi]);
            t[bi] = nbk;
        } else t[b->n_tab[j]++] = nbk;
    }
    return GPTC_OK;
}

/* The paged cache's prompt: evaluated once as beam 0, whose blocks every
 * beam then holds. */
static gptc_status prompt_paged(beam_state *b, gptc_model *m) {
    size_t n = b->n_prompt, mb = (size_t)b->max_blocks;
    int32_t *ids = b->pass, *pos = ids + n, *seq = pos + n, *rows = seq + n;
    int32_t need = (int32_t)((n + (size_t)b->bs - 1) / (size_t)b->bs);
    for (int32_t k = 0; k < need; k++) b->tab[k] = kvb_alloc(&b->blocks);
    b->n_tab[0] = need;
    for (size_t t = 0; t < n; t++) ids[t] = b->seq[t], pos[t] = (int32_t)t, seq[t] = 0;
    rows[0] = (int32_t)n - 1;
    b->tables[0] = b->tab;
    gptc_pass p = {.n_tokens = (int32_t)n, .ids = ids, .pos = pos, .seq = seq, .tables = b->tables,
                   .n_logits = 1, .logit_rows = rows};
    gptc_status st = m->backend->kv_eval(m, b->kv, &p, b->lp);
    for (size_t i = 1; i < (size_t)b->nb; i++) {
        b->n_tab[i] = need;
        for (int32_t k = 0; k < need; k++) {
            b->tab[i * mb + k] = b->tab[k];
            kvb_retain(&b->blocks, b->tab[k]);
        }
    }
    return st;
}

/* One decode pass for all beams: beam i's newest token at position cur - 1. */
static gptc_status step_paged(beam_state *b, gptc_model *m, size_t cur) {
    size_t nb = (size_t)b->nb;
    int32_t *ids = b->pass, *pos = ids + nb, *seq = pos + nb, *rows = seq + nb;
    for (size_t i = 0; i < nb; i++) {
        ids[i] = b->seq[i * b->total + cur - 1];
        pos[i] = (int32_t)cur - 1;
        seq[i] = rows[i] = (int32_t)i;
        b->tables[i] = b->tab + i * (size_t)b->max_blocks;
    }
    gptc_pass p = {.n_tokens = (int32_t)nb, .ids = ids, .pos = pos, .seq = seq, .tables = b->tables,
                   .n_logits = (int32_t)nb, .logit_rows = rows};
    return m->backend->kv_eval(m, b->kv, &p, b->lp);
}

static gptc_status beam_run(beam_state *b, gptc_model *m) {
    const gptc_generate_params *p = b->p;
    size_t nb = (size_t)b->nb, V = (size_t)b->V, cur = b->n_prompt;
    /* Only beam 0 starts live; the others are copies of it, held back at
     * -1e9 so that the first step does not pick the same token nb times. */
    for (size_t i = 0; i < nb; i++) {
        b->score[i] = i ? MASK : 0.0f;
        b->fin_score[i] = MASK;
        b->fin_len[i] = 0;
        b->fin_done[i] = 0;
    }
    gptc_status st = b->paged ? prompt_paged(b, m) : gptc_session_eval(b->sess[0], b->seq, b->n_prompt, 1, b->lp);
    if (st != GPTC_OK) return st;
    int unsat = 1; /* early stopping: the running beams may still improve */
    for (size_t step = 0;; step++) {
        /* The log_softmax is most of a step's time on the host (an exp per
         * entry): a row a thread, each summed as alone. The processors share
         * b->seen, so they run after, in turn. */
        int rows = step == 0 ? 1 : (int)nb, nt = m->n_threads > 1 ? m->n_threads : 1;
#pragma omp parallel for num_threads(nt) schedule(static) if (rows > 1 && nt > 1)
        for (int i = 0; i < rows; i++) log_softmax(b->lp + (size_t)i * V, b->V);
        for (size_t i = 0; i < nb; i++) {
            float *row = b->lp + i * V;
            if (step == 0 && i > 0) memcpy(row, b->lp, V * sizeof *row); /* same sequence */
            else process(b, row, b->seq + i * b->total, cur);
        }
#pragma omp parallel for num_threads(nt) schedule(static) if (nb > 1 && nt > 1)
        for (size_t i = 0; i < nb; i++)
            for (size_t v = 0; v < V; v++) b->lp[i * V + v] += b->score[i];
        topk_rows(b->lp, nb, V, b->K, b->row_cand, b->cand, nt);
        int all_hit = 1;
        for (size_t k = 0; k < b->K; k++) {
            b->cand_score[k] = b->lp[b->cand[k]];
            b->hits[k] = cur + 1 >= b->total || is_eos(p, (int32_t)(b->cand[k] % V));
            all_hit &= b->hits[k];
        }
        next_running(b, cur);
        update_finished(b, cur, unsat);
        SWAP(b->seq, b->seq_next);
        SWAP(b->score, b->score_next);
        cur++;

        /* Whether a running beam can still beat the worst finished slot
         * (transformers' _check_early_stop_heuristic). */
        size_t hyp = p->early_stopping == GPTC_EARLY_STOPPING_NEVER && p->length_penalty > 0.0
                         ? b->total - b->n_prompt
                         : cur - b->n_prompt;
        float best = b->score[0] / length_divisor(hyp, p->length_penalty);
        float worst = b->fin_score[0];
        int all_done = 1, any_better = 0;
        for (size_t i = 1; i < nb; i++)
            if (b->fin_score[i] < worst || isnan(b->fin_score[i])) worst = b->fin_score[i];
        for (size_t i = 0; i < nb; i++) {
            any_better |= best > (b->fin_done[i] ? worst : MASK);
            all_done &= b->fin_done[i];
        }
        unsat = unsat && any_better;
        if (!unsat || (all_done && p->early_stopping == GPTC_EARLY_STOPPING_TRUE) || all_hit) break;

        if (b->paged) {
            if ((st = reorder_tables(b, m, step == 0, (int32_t)cur - 1)) != GPTC_OK) return st;
            if ((st = step_paged(b, m, cur)) != GPTC_OK) return st;
            continue;
        }
        if ((st = reorder_caches(b, step == 0)) != GPTC_OK) return st;
        for (size_t i = 0; i < nb; i++) {
            st = gptc_session_eval(b->sess[i], b->seq + i * b->total + cur - 1, 1, 1, b->lp + i * V);
            if (st != GPTC_OK) return st;
        }
    }
    return GPTC_OK;
}

gptc_status gptc_generate_beams(gptc_model *m, const gptc_tokenizer *tok, const int32_t *prompt,
                                size_t n_prompt, const gptc_generate_params *p, int32_t **out_ids,
                                size_t *out_lens, float *out_scores) {
    if (out_ids) *out_ids = NULL;
    if (!out_ids || !out_lens)
        return gptc_fail(GPTC_ERR_ARG, "generate_beams: out_ids and out_lens must not be NULL");
    const int32_t *orig_prompt = prompt;
    size_t orig_n = n_prompt;
    int64_t max_new = 0;
    gptc_status st = gptc_generate_prepare(m, tok, p, &prompt, &n_prompt, &max_new);
    if (st != GPTC_OK) return st;
    size_t n_ret = (size_t)p->num_return_sequences;
    for (size_t i = 0; i < n_ret; i++) out_lens[i] = 0;
    if (p->num_beams == 1) {
        st = gptc_generate(m, tok, orig_prompt, orig_n, p, NULL, NULL, out_ids, &out_lens[0]);
        if (st == GPTC_OK && out_scores) out_scores[0] = NAN;
        if (st == GPTC_OK && !*out_ids && !(*out_ids = malloc(sizeof **out_ids)))
            st = gptc_fail(GPTC_ERR_NOMEM, "out of memory");
        return st;
    }
    if (max_new == 0) {
        if (out_scores)
            for (size_t i = 0; i < n_ret; i++) out_scores[i] = 0.0f;
        *out_ids = malloc(sizeof **out_ids);
        return *out_ids ? GPTC_OK : gptc_fail(GPTC_ERR_NOMEM, "out of memory");
    }
    const gptc_config *c = &m->cfg;
    beam_state b = {.p = p, .V = c->n_vocab, .nb = p->num_beams, .n_prompt = n_prompt,
                    .max_new = (size_t)max_new, .total = n_prompt + (size_t)max_new,
                    .paged = m->backend->kv_eval != NULL && !getenv("GPTC_BEAM_SESSIONS")};
    int32_t n_keep = 1 + p->n_eos_token_ids > 2 ? 1 + p->n_eos_token_ids : 2;
    b.K = (size_t)n_keep * (size_t)b.nb;
    if (b.K > (size_t)b.nb * (size_t)b.V)
        return gptc_fail(GPTC_ERR_ARG,
                         "num_beams: beam search keeps %zu candidates a step, more than the %d beams x %d tokens",
                         b.K, b.nb, b.V);
    if ((st = beam_alloc(&b, m)) != GPTC_OK) goto done;
    for (size_t i = 0; i < (size_t)b.nb; i++) memcpy(b.seq + i * b.total, prompt, n_prompt * sizeof *prompt);
    if ((st = beam_run(&b, m)) != GPTC_OK) goto done;

    size_t n_all = 0;
    for (size_t i = 0; i < n_ret; i++) n_all += b.fin_len[i];
    if (!(*out_ids = malloc((n_all ? n_all : 1) * sizeof **out_ids))) {
        st = gptc_fail(GPTC_ERR_NOMEM, "out of memory");
        goto done;
    }
    for (size_t i = 0, at = 0; i < n_ret; i++) {
        memcpy(*out_ids + at, b.fin + i * b.max_new, b.fin_len[i] * sizeof **out_ids);
        at += b.fin_len[i];
        out_lens[i] = b.fin_len[i];
        if (out_scores) out_scores[i] = b.fin_score[i];
    }
done:
    beam_free(&b, m);
    return st;
}
