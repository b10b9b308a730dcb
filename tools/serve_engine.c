/*
 * serve_engine.c - the engine's threads (see serve_engine.h): a worker per
 * model (per GPU with --devices), each with its own gptc_batch; a job goes
 * to the worker with the fewest sequences and stays there. One lock covers
 * every worker and job: it is held only around bookkeeping, never a step.
 *
 * A worker's loop: take new jobs and cancellations under the lock; then, without it,
 * cancel, add the new sequences to the gptc_batch and run one step; then,
 * under the lock again, hand each step's tokens to their jobs and wake their
 * HTTP threads. A job joins the running batch at the next step, however long
 * the others still run (continuous batching), and a cancelled one frees its
 * cache before the next step.
 *
 * Text and stop sequences are handled here, not in the library: OpenAI's
 * `stop` ends the text *before* the stop sequence and matches only the
 * generated text, and a stream must not send the first bytes of what may
 * become a stop sequence. So each token's text (from a gptc_detok, which
 * never splits a UTF-8 character) is appended to the choice, searched for
 * every stop sequence, and only the part that can no longer become one is
 * made ready; a match cuts the text and cancels the sequence at once.
 */
#include "serve_engine.h"

#include <errno.h>
#include <math.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

typedef struct {
    uint64_t id;    /* in the batch; ids grow, so the table stays sorted */
    serve_job *job; /* NULL once the sequence left (compacted after each turn) */
    serve_choice *c;
} active;

/* One model (one GPU with --devices) and the thread that steps its batch. */
typedef struct worker {
    serve_engine *e;
    pthread_t thread;
    int started, want_cancel;
    pthread_cond_t cv; /* wakes the thread */
    gptc_model *m;
    gptc_batch *b; /* NULL: the beam-search worker */
    serve_job *in_head, *in_tail; /* submitted to it, not yet added */
    size_t n_seqs;                /* its sequences submitted and not finished */
    gptc_batch_stats stats;       /* after its last step */
    /* the thread's own */
    active *act;
    size_t n_act, cap_act;
    uint64_t *cancel; /* batch ids to cancel before the next step */
    size_t n_cancel, cap_cancel;
} worker;

struct serve_engine {
    pthread_mutex_t mu; /* over every worker and job */
    int stop;
    const gptc_tokenizer *tok;
    serve_metrics *metrics;
    size_t max_batch, max_seqs; /* per worker */
    worker *w;
    size_t n_w;
    /* Jobs the batches do not take, one at a time on a thread of their own
     * beside them, on the first model: beam search (num_beams > 1), and
     * the scoring of the prompt for echo with logprobs (then the job goes
     * on to a batch). */
    worker solo;
};

double serve_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

void serve_engine_lock(serve_engine *e) { pthread_mutex_lock(&e->mu); }
void serve_engine_unlock(serve_engine *e) { pthread_mutex_unlock(&e->mu); }
size_t serve_engine_max_sequences(const serve_engine *e) { return e->max_seqs; }

/* ---- jobs ---- */

static void job_free(serve_job *j) {
    for (size_t i = 0; i < j->n_choices; i++) {
        serve_choice *c = &j->choices[i];
        serve_buf_free(&c->text);
        free(c->pieces);
        free(c->piece_lps);
        free(c->lps);
        gptc_detok_free(c->detok);
    }
    free(j->choices);
    serve_completion_free(&j->req);
    pthread_cond_destroy(&j->cv);
    free(j);
}

/* With the lock held. */
static void job_unref(serve_job *j) {
    if (--j->refs == 0) job_free(j);
}

void serve_job_release(serve_engine *e, serve_job *j) {
    if (!j) return;
    pthread_mutex_lock(&e->mu);
    job_unref(j);
    pthread_mutex_unlock(&e->mu);
}

static int push_piece(serve_choice *c) {
    if (c->n_pieces == c->cap_pieces) {
        size_t cap = c->cap_pieces ? 2 * c->cap_pieces : 16;
        size_t *p = realloc(c->pieces, cap * sizeof *p);
        if (!p) return 0;
        c->pieces = p;
        if (!(p = realloc(c->piece_lps, cap * sizeof *p))) return 0;
        c->piece_lps = p;
        c->cap_pieces = cap;
    }
    c->piece_lps[c->n_pieces] = c->n_lps;
    c->pieces[c->n_pieces++] = c->ready;
    return 1;
}

/* The event's log-probabilities, for a token whose text starts at the end
 * of the choice's text so far. */
static int push_logprob(serve_choice *c, const gptc_batch_event *ev) {
    if (c->n_lps == c->cap_lps) {
        size_t cap = c->cap_lps ? 2 * c->cap_lps : 16;
        serve_logprob *p = realloc(c->lps, cap * sizeof *p);
        if (!p) return 0;
        c->lps = p;
        c->cap_lps = cap;
    }
    serve_logprob *l = &c->lps[c->n_lps++];
    l->token = ev->token;
    l->logprob = ev->logprob;
    l->text_off = c->text.len;
    l->n_top = ev->n_top < GPTC_MAX_TOP_LOGPROBS ? ev->n_top : GPTC_MAX_TOP_LOGPROBS;
    for (int32_t i = 0; i < l->n_top; i++) {
        l->top_ids[i] = ev->top_ids[i];
        l->top_logprobs[i] = ev->top_logprobs[i];
    }
    return 1;
}

/* j to the end of w's queue, and w woken (lock held). */
static void enqueue_locked(worker *w, serve_job *j) {
    j->worker = w;
    if (w->in_tail)
        w->in_tail->next = j;
    else
        w->in_head = j;
    w->in_tail = j;
    pthread_cond_signal(&w->cv);
}

int serve_engine_submit(serve_engine *e, serve_completion *req, double t_arrival, serve_job **out,
                        serve_error *err) {
    *out = NULL;
    serve_job *j = calloc(1, sizeof *j);
    size_t n = req->n_prompts * (size_t)req->n;
    if (j) {
        j->req = *req;
        memset(req, 0, sizeof *req);
        pthread_condattr_t ca;
        pthread_condattr_init(&ca);
        pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
        pthread_cond_init(&j->cv, &ca);
        pthread_condattr_destroy(&ca);
        j->choices = calloc(n, sizeof *j->choices);
        j->n_choices = j->choices ? n : 0;
    }
    int ok = j && j->choices;
    for (size_t i = 0; ok && i < n; i++) {
        serve_choice *c = &j->choices[i];
        c->index = (int32_t)i;
        c->prompt = i / (size_t)j->req.n;
        ok = gptc_detok_new(e->tok, &c->detok) == GPTC_OK;
        if (ok && j->req.echo) {
            const serve_prompt *p = &j->req.prompts[c->prompt];
            serve_buf_add(&c->text, p->text, p->text_len);
            c->gen_start = c->ready = c->text.len;
            ok = !c->text.failed && push_piece(c);
        }
    }
    if (!ok) {
        if (j) job_free(j);
        serve_error_set(err, 500, NULL, "out of memory");
        return 0;
    }
    j->t_arrival = t_arrival;
    j->refs = 2; /* the caller's and the engine's */
    pthread_mutex_lock(&e->mu);
    /* The least busy worker takes it (the first of equals); beam search
     * its own. */
    worker *w = &e->w[0];
    for (size_t i = 1; i < e->n_w; i++)
        if (e->w[i].n_seqs < w->n_seqs) w = &e->w[i];
    if (j->req.params.num_beams > 1 || (j->req.echo && j->req.logprobs >= 0)) w = &e->solo;
    if (w->n_seqs + n > e->max_seqs) {
        size_t busy = w->n_seqs;
        pthread_mutex_unlock(&e->mu);
        job_free(j);
        serve_error_set(
            err, 429, NULL,
            "the server is busy: %zu sequences are running or queued, this request needs %zu more "
            "and the server takes %zu; retry later",
            busy, n, e->max_seqs);
        err->type = "rate_limit_error";
        err->code = "queue_full";
        return 0;
    }
    w->n_seqs += n;
    enqueue_locked(w, j);
    pthread_mutex_unlock(&e->mu);
    *out = j;
    return 1;
}

int serve_job_accepted(const serve_job *j) { return j->state != SERVE_JOB_QUEUED; }
int serve_job_finished(const serve_job *j) {
    return j->state == SERVE_JOB_DONE || j->state == SERVE_JOB_FAILED;
}
int serve_job_has_news(const serve_job *j) {
    if (serve_job_finished(j)) return 1;
    for (size_t i = 0; i < j->n_choices; i++)
        if (j->choices[i].sent < j->choices[i].n_pieces) return 1;
    return 0;
}

static void cancel_locked(serve_engine *e, serve_job *j) {
    if (serve_job_finished(j) || j->cancelled) return;
    (void)e;
    j->cancelled = 1;
    j->worker->want_cancel = 1;
    pthread_cond_signal(&j->worker->cv);
}

void serve_job_cancel(serve_engine *e, serve_job *j) {
    pthread_mutex_lock(&e->mu);
    cancel_locked(e, j);
    pthread_mutex_unlock(&e->mu);
}

/* Whether the peer of a connected socket has closed it or reset it. A client
 * sends nothing more while it waits for its response, so a readable socket
 * that reads as end-of-file means it is gone. */
static int peer_gone(int fd) {
    struct pollfd p = {.fd = fd, .events = POLLIN};
    if (poll(&p, 1, 0) <= 0) return 0;
    if (p.revents & (POLLERR | POLLHUP | POLLNVAL)) return 1;
    if (!(p.revents & POLLIN)) return 0;
    char ch;
    ssize_t r = recv(fd, &ch, 1, MSG_PEEK);
    return r == 0 || (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
}

int serve_job_wait(serve_engine *e, serve_job *j, serve_job_pred pred, int fd, double deadline) {
    const double tick = 0.02;
    double last_check = serve_now();
    pthread_mutex_lock(&e->mu);
    for (;;) {
        /* The deadline first: a stream whose tokens keep coming is never
         * left waiting, and must still end on time. */
        if (deadline > 0 && serve_now() > deadline && !serve_job_finished(j)) {
            cancel_locked(e, j);
            pthread_mutex_unlock(&e->mu);
            return -2;
        }
        if (pred(j)) break;
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_nsec += (long)(tick * 1e9);
        if (ts.tv_nsec >= 1000000000L) ts.tv_sec++, ts.tv_nsec -= 1000000000L;
        pthread_cond_timedwait(&j->cv, &e->mu, &ts);
        if (pred(j)) break;
        double now = serve_now();
        if (now - last_check < tick) continue;
        last_check = now;
        pthread_mutex_unlock(&e->mu);
        int gone = fd >= 0 && peer_gone(fd);
        pthread_mutex_lock(&e->mu);
        if (gone || (deadline > 0 && now > deadline)) {
            cancel_locked(e, j);
            pthread_mutex_unlock(&e->mu);
            return gone ? -1 : -2;
        }
    }
    pthread_mutex_unlock(&e->mu);
    return 1;
}

void serve_engine_gauges(serve_engine *e, serve_gauges *g) {
    memset(g, 0, sizeof *g);
    pthread_mutex_lock(&e->mu);
    for (size_t i = 0; i < e->n_w; i++) {
        const worker *w = &e->w[i];
        g->running += w->stats.running;
        g->queued += w->n_seqs > w->stats.running ? w->n_seqs - w->stats.running : 0;
        g->kv_used += w->stats.kv_positions_used;
        g->kv_reserved += w->stats.kv_positions_reserved;
        g->kv_total += w->stats.kv_positions_total;
        g->max_batch += e->max_batch;
    }
    pthread_mutex_unlock(&e->mu);
}

/* ---- the engine thread; functions below run on it, "locked" ones with the lock ---- */

static int push_cancel(worker *w, uint64_t id) {
    if (w->n_cancel == w->cap_cancel) {
        size_t cap = w->cap_cancel ? 2 * w->cap_cancel : 64;
        uint64_t *p = realloc(w->cancel, cap * sizeof *p);
        if (!p) return 0;
        w->cancel = p;
        w->cap_cancel = cap;
    }
    w->cancel[w->n_cancel++] = id;
    return 1;
}

/* A sequence of j ended (finished, stopped, cancelled): the job is done with
 * its last one, and the engine's reference goes. */
static void choice_done_locked(worker *w, serve_job *j) {
    w->n_seqs--;
    if (++j->n_finished < j->n_choices) return;
    if (j->state != SERVE_JOB_FAILED) j->state = SERVE_JOB_DONE;
    if (!j->cancelled) serve_metrics_e2e(w->e->metrics, serve_now() - j->t_arrival);
    pthread_cond_broadcast(&j->cv);
    job_unref(j);
}

/* Ends a job with an error: its sequences still in the batch are cancelled. */
static void fail_job_locked(worker *w, serve_job *j, const serve_error *err) {
    for (size_t i = 0; i < w->n_act; i++)
        if (w->act[i].job == j) {
            push_cancel(w, w->act[i].id); /* a failed push: the sequence runs to its end unseen */
            w->act[i].job = NULL;
        }
    j->state = SERVE_JOB_FAILED;
    j->error = *err;
    w->n_seqs -= j->n_choices - j->n_finished;
    j->n_finished = j->n_choices;
    pthread_cond_broadcast(&j->cv);
    job_unref(j);
}

static active *find_active(worker *w, uint64_t id) {
    size_t lo = 0, hi = w->n_act;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (w->act[mid].id < id)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < w->n_act && w->act[lo].id == id ? &w->act[lo] : NULL;
}

static void compact_active(worker *w) {
    size_t k = 0;
    for (size_t i = 0; i < w->n_act; i++)
        if (w->act[i].job) w->act[k++] = w->act[i];
    w->n_act = k;
}

/* The earliest stop sequence in the generated text that ends in its last
 * `added` bytes: its offset, or -1. */
static long find_stop(const serve_job *j, const serve_choice *c, size_t added) {
    const char *t = c->text.data;
    size_t len = c->text.len, from = len - added;
    long best = -1;
    for (size_t s = 0; s < j->req.n_stops; s++) {
        const char *stop = j->req.stops[s];
        size_t L = strlen(stop);
        size_t lo = from + 1 > L ? from + 1 - L : 0;
        if (lo < c->gen_start) lo = c->gen_start;
        for (size_t i = lo; i + L <= len; i++)
            if (memcmp(t + i, stop, L) == 0) {
                if (best < 0 || (long)i < best) best = (long)i;
                break;
            }
    }
    return best;
}

/* Bytes at the end of the generated text that are the start of a stop
 * sequence: they may not be sent yet. */
static size_t held_back(const serve_job *j, const serve_choice *c) {
    size_t gen = c->text.len - c->gen_start, hold = 0;
    for (size_t s = 0; s < j->req.n_stops; s++) {
        const char *stop = j->req.stops[s];
        size_t L = strlen(stop);
        for (size_t k = (L - 1 < gen ? L - 1 : gen); k > hold; k--)
            if (memcmp(c->text.data + c->text.len - k, stop, k) == 0) {
                hold = k;
                break;
            }
    }
    return hold;
}

/* Appends detokenized text; 1 if a stop sequence now ends it (cut there). */
static int append_text(const serve_job *j, serve_choice *c, const char *t, size_t n) {
    if (!n) return 0;
    serve_buf_add(&c->text, t, n);
    if (c->text.failed) return 0;
    long at = find_stop(j, c, n);
    if (at < 0) return 0;
    c->text.len = (size_t)at;
    c->text.data[at] = '\0';
    return 1;
}

static void deliver_locked(worker *w, active *a, const gptc_batch_event *ev, double now) {
    serve_job *j = a->job;
    serve_choice *c = a->c;
    int stopped = 0, ok = 1;
    if (ev->token >= 0) {
        c->n_tokens++;
        serve_metrics_generated_token(w->e->metrics);
        if (c->n_tokens > 1)
            serve_metrics_itl(w->e->metrics, now - c->t_last);
        else if (!j->first_token) {
            j->first_token = 1;
            serve_metrics_ttft(w->e->metrics, now - j->t_arrival);
        }
        c->t_last = now;
        if (j->req.logprobs >= 0) ok = push_logprob(c, ev);
        /* eos ends the text without being part of it */
        if (ok && ev->finish != GPTC_FINISH_EOS) {
            const char *t;
            size_t n;
            ok = gptc_detok_push(c->detok, ev->token, &t, &n) == GPTC_OK;
            if (ok) stopped = append_text(j, c, t, n);
        }
    }
    int finished = ev->finish != GPTC_FINISH_NONE || stopped;
    if (ok && finished && !stopped) {
        const char *t;
        size_t n;
        ok = gptc_detok_flush(c->detok, &t, &n) == GPTC_OK;
        if (ok) stopped = append_text(j, c, t, n);
    }
    if (ok) {
        size_t hold = finished ? 0 : held_back(j, c);
        if (c->text.len - hold > c->ready) c->ready = c->text.len - hold;
        ok = !c->text.failed && push_piece(c);
    }
    if (!ok) {
        serve_error err;
        serve_error_set(&err, 500, NULL, "out of memory");
        fail_job_locked(w, j, &err);
        return;
    }
    pthread_cond_broadcast(&j->cv);
    if (!finished) return;
    c->finish = stopped || ev->finish == GPTC_FINISH_EOS || ev->finish == GPTC_FINISH_STOP_STRING
                    ? "stop"
                    : "length";
    if (ev->finish == GPTC_FINISH_NONE && w->b) push_cancel(w, a->id);
    a->job = NULL;
    choice_done_locked(w, j);
}

/* Adds a job's sequences to the batch (without the lock: the batch and the
 * job's request are the engine's). On failure the ones added are cancelled. */
static int add_job(worker *w, serve_job *j, serve_error *err) {
    const serve_completion *r = &j->req;
    size_t k = 0;
    for (; k < j->n_choices; k++) {
        serve_choice *c = &j->choices[k];
        const serve_prompt *p = &r->prompts[c->prompt];
        gptc_generate_params params = r->params;
        /* choice i of a prompt: seed + i, so that n = 1 with seed s is the
         * CLI's --seed s, and the n choices differ */
        params.seed = r->params.seed + (uint64_t)(c->index % r->n);
        gptc_status st = gptc_batch_add(w->b, p->ids, p->n_ids, &params, &c->id);
        if (st == GPTC_OK && r->logprobs >= 0) {
            st = gptc_batch_logprobs(w->b, c->id, r->logprobs);
            if (st != GPTC_OK) gptc_batch_cancel(w->b, c->id);
        }
        if (st == GPTC_OK) continue;
        int status = st == GPTC_ERR_NOMEM                         ? 503
                     : st == GPTC_ERR_IO || st == GPTC_ERR_FORMAT ? 500
                                                                  : 400;
        const char *msg = gptc_last_error();
        const char *param = strncmp(msg, "presence_penalty", 16) == 0    ? "presence_penalty"
                            : strncmp(msg, "frequency_penalty", 17) == 0 ? "frequency_penalty"
                            : strncmp(msg, "kv_memory", 9) == 0          ? "max_tokens"
                                                                         : "prompt";
        serve_error_set(err, status, status == 400 ? param : NULL, "%s", msg);
        break;
    }
    if (k == j->n_choices) return 1;
    for (size_t i = 0; i < k; i++)
        gptc_batch_cancel(w->b, j->choices[i].id);
    return 0;
}

static int grow_active(worker *w, size_t extra) {
    if (w->n_act + extra <= w->cap_act) return 1;
    size_t cap = w->cap_act ? w->cap_act : 64;
    while (cap < w->n_act + extra)
        cap *= 2;
    active *p = realloc(w->act, cap * sizeof *p);
    if (!p) return 0;
    w->act = p;
    w->cap_act = cap;
    return 1;
}

/* A job that leaves its worker's queue cancelled: done. Lock held. */
static void drop_cancelled_locked(worker *w, serve_job *j) {
    w->n_seqs -= j->n_choices - j->n_finished;
    j->n_finished = j->n_choices;
    j->state = SERVE_JOB_DONE;
    pthread_cond_broadcast(&j->cv);
    job_unref(j);
}

static void *engine_main(void *arg) {
    worker *w = arg;
    pthread_mutex_lock(&w->e->mu);
    for (;;) {
        while (!w->e->stop && !w->in_head && !w->n_act && !w->n_cancel && !w->want_cancel)
            pthread_cond_wait(&w->cv, &w->e->mu);
        if (w->e->stop) break;
        if (w->want_cancel) {
            w->want_cancel = 0;
            for (size_t i = 0; i < w->n_act; i++) {
                serve_job *j = w->act[i].job;
                if (!j || !j->cancelled) continue;
                push_cancel(w, w->act[i].id);
                w->act[i].job = NULL;
                choice_done_locked(w, j);
            }
            compact_active(w);
        }
        /* New jobs; those cancelled while they queued are done at once. */
        serve_job *in = NULL, **tail = &in;
        for (serve_job *j = w->in_head, *next; j; j = next) {
            next = j->next;
            j->next = NULL;
            if (j->cancelled) {
                drop_cancelled_locked(w, j);
            } else {
                *tail = j;
                tail = &j->next;
            }
        }
        w->in_head = w->in_tail = NULL;
        pthread_mutex_unlock(&w->e->mu);

        for (size_t i = 0; i < w->n_cancel; i++)
            gptc_batch_cancel(w->b, w->cancel[i]);
        w->n_cancel = 0;
        for (serve_job *j = in, *next; j; j = next) {
            next = j->next;
            serve_error err;
            int ok = add_job(w, j, &err);
            if (ok && !grow_active(w, j->n_choices)) {
                for (size_t i = 0; i < j->n_choices; i++)
                    gptc_batch_cancel(w->b, j->choices[i].id);
                serve_error_set(&err, 500, NULL, "out of memory");
                ok = 0;
            }
            pthread_mutex_lock(&w->e->mu);
            if (ok) {
                size_t tokens = 0;
                for (size_t i = 0; i < j->n_choices; i++) {
                    w->act[w->n_act++] =
                        (active){.id = j->choices[i].id, .job = j, .c = &j->choices[i]};
                    tokens += j->req.prompts[j->choices[i].prompt].n_ids;
                }
                serve_metrics_prompt_tokens(w->e->metrics, tokens);
                j->state = SERVE_JOB_RUNNING;
                pthread_cond_broadcast(&j->cv);
            } else
                fail_job_locked(w, j, &err);
            pthread_mutex_unlock(&w->e->mu);
        }

        const gptc_batch_event *ev = NULL;
        size_t n_ev = 0;
        gptc_status st = GPTC_OK;
        if (w->n_act) st = gptc_batch_step(w->b, &ev, &n_ev);
        serve_error step_err;
        if (st != GPTC_OK)
            serve_error_set(&step_err, 500, NULL, "the engine failed: %s", gptc_last_error());
        double now = serve_now();
        gptc_batch_stats stats = gptc_batch_get_stats(w->b);
        pthread_mutex_lock(&w->e->mu);
        w->stats = stats;
        if (st != GPTC_OK) {
            /* The batch's state after a failed step is unknown: every
             * sequence in it ends, with an error to its client. */
            for (size_t i = 0; i < w->n_act; i++)
                if (w->act[i].job) fail_job_locked(w, w->act[i].job, &step_err);
        } else
            for (size_t i = 0; i < n_ev; i++) {
                active *a = find_active(w, ev[i].id);
                if (a && a->job) deliver_locked(w, a, &ev[i], now);
            }
        compact_active(w);
    }
    pthread_mutex_unlock(&w->e->mu);
    return NULL;
}

/*
 * Beam search: each prompt of the job through gptc_generate_beams (the n
 * best beams of one search per prompt: choice i of a prompt is beam i),
 * then their tokens to the choices as a batch worker delivers them, all at
 * the end (a search's beams are not final before). Without the lock; 0 and
 * *err on failure. ids[p] / lens[p * n + i]: prompt p's beams.
 */
static int run_beams(worker *w, serve_job *j, int32_t **ids, size_t *lens, serve_error *err) {
    const serve_completion *r = &j->req;
    size_t n = (size_t)r->n;
    for (size_t p = 0; p < r->n_prompts; p++) {
        gptc_status st = gptc_generate_beams(w->m, w->e->tok, r->prompts[p].ids, r->prompts[p].n_ids, &r->params,
                                             &ids[p], lens + p * n, NULL);
        if (st != GPTC_OK) {
            serve_error_set(err, st == GPTC_ERR_NOMEM ? 503 : st == GPTC_ERR_ARG || st == GPTC_ERR_RANGE ? 400 : 500,
                            NULL, "%s", gptc_last_error());
            return 0;
        }
    }
    return 1;
}

/* The beams' tokens to the choices (lock held). Choices are prompt-major:
 * choice k is beam k % n of prompt k / n. */
static void deliver_beams_locked(worker *w, serve_job *j, int32_t *const *ids, const size_t *lens) {
    const serve_completion *r = &j->req;
    size_t n = (size_t)r->n;
    double now = serve_now();
    for (size_t k = 0; k < j->n_choices && j->state != SERVE_JOB_FAILED; k++) {
        size_t p = k / n, b = k % n, off = 0;
        for (size_t q = 0; q < b; q++)
            off += lens[p * n + q];
        size_t len = lens[p * n + b];
        active a = {.id = 0, .job = j, .c = &j->choices[k]};
        for (size_t t = 0; t < len && a.job && j->state != SERVE_JOB_FAILED; t++) {
            int32_t id = ids[p][off + t];
            int eos = 0;
            for (int32_t q = 0; q < r->params.n_eos_token_ids; q++)
                eos |= id == r->params.eos_token_ids[q];
            gptc_batch_event ev = {.id = 0, .token = id, .logprob = NAN};
            ev.finish = eos ? GPTC_FINISH_EOS : t + 1 == len ? GPTC_FINISH_LENGTH : GPTC_FINISH_NONE;
            deliver_locked(w, &a, &ev, now);
        }
        if (a.job && j->state != SERVE_JOB_FAILED) { /* no token at all (max_tokens 0) */
            gptc_batch_event ev = {.id = 0, .token = -1, .finish = GPTC_FINISH_LENGTH, .logprob = NAN};
            deliver_locked(w, &a, &ev, now);
        }
    }
}

/*
 * echo with logprobs: the log-probability of each prompt token under the
 * logits of the positions before it (the first has none: NAN, n_top -1),
 * from a session, 64 positions of logits at a time. out[p] gets prompt p's
 * n_ids entries. Without the lock; 0 and *err on failure.
 */
#define SCORE_ROWS 64
static int score_prompts(worker *w, serve_job *j, serve_logprob **out, serve_error *err) {
    const serve_completion *r = &j->req;
    int32_t V = gptc_model_config(w->m)->n_vocab;
    float *logits = malloc((size_t)SCORE_ROWS * (size_t)V * sizeof *logits);
    gptc_status st = logits ? GPTC_OK : GPTC_ERR_NOMEM;
    for (size_t p = 0; p < r->n_prompts && st == GPTC_OK; p++) {
        const serve_prompt *pr = &r->prompts[p];
        serve_logprob *lp = out[p] = calloc(pr->n_ids, sizeof *lp);
        gptc_session *s = NULL;
        if (!lp || (st = gptc_session_new(w->m, (int32_t)pr->n_ids, &s)) != GPTC_OK) {
            if (!lp) st = GPTC_ERR_NOMEM;
            break;
        }
        size_t off = 0;
        for (size_t i = 0; i < pr->n_ids; i++) {
            size_t len = 0;
            gptc_tokenizer_token_bytes(w->e->tok, pr->ids[i], &len);
            lp[i] = (serve_logprob){.token = pr->ids[i], .logprob = NAN, .text_off = off, .n_top = -1};
            off += len;
        }
        /* logits of positions [a, b) score tokens [a + 1, b + 1) */
        for (size_t a = 0; a + 1 < pr->n_ids && st == GPTC_OK; a += SCORE_ROWS) {
            size_t b = a + SCORE_ROWS < pr->n_ids - 1 ? a + SCORE_ROWS : pr->n_ids - 1;
            if ((st = gptc_session_eval(s, pr->ids + a, b - a, b - a, logits)) != GPTC_OK) break;
            for (size_t i = a; i < b; i++) {
                serve_logprob *l = &lp[i + 1];
                l->n_top = gptc_logprobs(logits + (i - a) * (size_t)V, V, l->token, r->logprobs, &l->logprob,
                                         l->top_ids, l->top_logprobs);
            }
        }
        gptc_session_free(s);
    }
    free(logits);
    if (st != GPTC_OK)
        serve_error_set(err, st == GPTC_ERR_NOMEM ? 503 : 500, NULL, "%s",
                        st == GPTC_ERR_NOMEM ? "out of memory" : gptc_last_error());
    return st == GPTC_OK;
}

/* The prompt's entries first in each choice's logprobs, with the echo
 * piece (lock held); 0 when memory ran out. */
static int add_prompt_logprobs_locked(serve_job *j, serve_logprob *const *lps) {
    for (size_t k = 0; k < j->n_choices; k++) {
        serve_choice *c = &j->choices[k];
        size_t n = j->req.prompts[c->prompt].n_ids;
        serve_logprob *p = realloc(c->lps, (c->n_lps + n) * sizeof *p);
        if (!p) return 0;
        memcpy(p + c->n_lps, lps[c->prompt], n * sizeof *p);
        c->lps = p;
        c->n_lps += n;
        c->cap_lps = c->n_lps;
        if (c->n_pieces) c->piece_lps[0] = c->n_lps; /* the echo's chunk carries them */
    }
    return 1;
}

/*
 * The solo worker (serve_engine.solo): beam search, and the prompt scoring
 * of echo with logprobs, after which the job joins the least busy batch
 * (or, with max_tokens 0, ends). Neither can be stopped midway: a job
 * cancelled meanwhile is dropped when it ends.
 */
static void *solo_main(void *arg) {
    worker *w = arg;
    serve_engine *e = w->e;
    pthread_mutex_lock(&e->mu);
    for (;;) {
        while (!e->stop && !w->in_head)
            pthread_cond_wait(&w->cv, &e->mu);
        if (e->stop) break;
        serve_job *j = w->in_head;
        w->in_head = j->next;
        if (!w->in_head) w->in_tail = NULL;
        j->next = NULL;
        if (j->cancelled) {
            drop_cancelled_locked(w, j);
            continue;
        }
        const serve_completion *r = &j->req;
        int beams = r->params.num_beams > 1, to_batch = !beams && r->params.max_new_tokens > 0;
        /* A scored prompt's job stays queued until its prompt's entries are
         * in: a stream's echo chunk must carry them. */
        if (beams) {
            j->state = SERVE_JOB_RUNNING;
            pthread_cond_broadcast(&j->cv);
        }
        if (!to_batch) {
            size_t tokens = 0;
            for (size_t i = 0; i < r->n_prompts; i++)
                tokens += r->prompts[i].n_ids * (size_t)r->n;
            serve_metrics_prompt_tokens(e->metrics, tokens);
        }
        pthread_mutex_unlock(&e->mu);

        size_t n_p = r->n_prompts;
        int32_t **ids = calloc(n_p, sizeof *ids);
        size_t *lens = calloc(n_p * (size_t)r->n, sizeof *lens);
        serve_logprob **lps = calloc(n_p, sizeof *lps);
        serve_error err = {0};
        int ok = ids && lens && lps;
        if (!ok) serve_error_set(&err, 503, NULL, "out of memory");
        else if (beams) ok = run_beams(w, j, ids, lens, &err);
        else ok = score_prompts(w, j, lps, &err);

        pthread_mutex_lock(&e->mu);
        if (ok && !beams && !add_prompt_logprobs_locked(j, lps)) {
            serve_error_set(&err, 503, NULL, "out of memory");
            ok = 0;
        }
        if (!ok)
            fail_job_locked(w, j, &err);
        else if (j->cancelled)
            drop_cancelled_locked(w, j);
        else if (to_batch) {
            /* on to the least busy batch, which adds it as any new job */
            worker *t = &e->w[0];
            for (size_t i = 1; i < e->n_w; i++)
                if (e->w[i].n_seqs < t->n_seqs) t = &e->w[i];
            w->n_seqs -= j->n_choices;
            t->n_seqs += j->n_choices;
            enqueue_locked(t, j);
        } else {
            /* A reference of our own while the choices are fed: a failure
             * (out of memory) ends the job and drops the engine's. */
            j->refs++;
            deliver_beams_locked(w, j, ids, lens);
            job_unref(j);
        }
        for (size_t p = 0; p < n_p; p++) {
            if (ids) free(ids[p]);
            if (lps) free(lps[p]);
        }
        free(ids);
        free(lens);
        free(lps);
    }
    pthread_mutex_unlock(&e->mu);
    return NULL;
}

static void worker_free(worker *w) {
    if (w->started) pthread_join(w->thread, NULL);
    serve_error err;
    serve_error_set(&err, 503, NULL, "the server is shutting down");
    pthread_mutex_lock(&w->e->mu);
    for (size_t i = 0; i < w->n_act; i++)
        if (w->act[i].job) fail_job_locked(w, w->act[i].job, &err);
    for (serve_job *j = w->in_head, *next; j; j = next) {
        next = j->next;
        fail_job_locked(w, j, &err);
    }
    w->in_head = w->in_tail = NULL;
    pthread_mutex_unlock(&w->e->mu);
    if (w->b) gptc_batch_free(w->b);
    pthread_cond_destroy(&w->cv);
    free(w->act);
    free(w->cancel);
}

gptc_status serve_engine_new(gptc_model *const *models, size_t n_models, const gptc_tokenizer *tok,
                             const gptc_batch_params *bp, size_t max_waiting, serve_metrics *metrics,
                             serve_engine **out) {
    *out = NULL;
    serve_engine *e = calloc(1, sizeof *e);
    if (!e || !(e->w = calloc(n_models, sizeof *e->w))) {
        free(e);
        return GPTC_ERR_NOMEM;
    }
    pthread_mutex_init(&e->mu, NULL);
    e->tok = tok;
    e->metrics = metrics;
    e->max_batch =
        bp->max_batch ? (size_t)bp->max_batch : (size_t)gptc_batch_default_params().max_batch;
    e->max_seqs = e->max_batch + max_waiting;
    gptc_status st = GPTC_OK;
    e->solo.e = e;
    e->solo.m = models[0];
    pthread_cond_init(&e->solo.cv, NULL);
    if (pthread_create(&e->solo.thread, NULL, solo_main, &e->solo) != 0) st = GPTC_ERR_NOMEM;
    else e->solo.started = 1;
    for (size_t i = 0; i < n_models && st == GPTC_OK; i++) {
        worker *w = &e->w[i];
        w->e = e;
        w->m = models[i];
        pthread_cond_init(&w->cv, NULL);
        e->n_w++;
        if ((st = gptc_batch_new(models[i], tok, bp, &w->b)) != GPTC_OK) break;
        w->stats = gptc_batch_get_stats(w->b);
        if (pthread_create(&w->thread, NULL, engine_main, w) != 0) st = GPTC_ERR_NOMEM;
        else w->started = 1;
    }
    if (st != GPTC_OK) {
        serve_engine_free(e);
        return st;
    }
    *out = e;
    return GPTC_OK;
}

void serve_engine_free(serve_engine *e) {
    if (!e) return;
    pthread_mutex_lock(&e->mu);
    e->stop = 1;
    for (size_t i = 0; i < e->n_w; i++)
        pthread_cond_signal(&e->w[i].cv);
    pthread_cond_signal(&e->solo.cv);
    pthread_mutex_unlock(&e->mu);
    for (size_t i = 0; i < e->n_w; i++)
        worker_free(&e->w[i]);
    if (e->solo.e) worker_free(&e->solo);
    pthread_mutex_destroy(&e->mu);
    free(e->w);
    free(e);
}
