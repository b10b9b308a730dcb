/*
 * serve_engine.h - the server's engine: a thread per model (one per GPU with
 * --devices) that owns its gptc_batch and steps it, and the jobs (completion
 * requests) that HTTP threads hand to it and wait on.
 *
 * Threads: a gptc_batch is used by one thread at a time, so only its
 * engine thread touches it. HTTP threads submit jobs and read their results; a job's
 * fields below are shared and read or written only with the engine's lock
 * held (serve_engine_lock), except `req`, which is fixed once submitted.
 */
#ifndef GPTC_SERVE_ENGINE_H
#define GPTC_SERVE_ENGINE_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "gptc.h"
#include "serve_buf.h"
#include "serve_metrics.h"
#include "serve_request.h"

/* One generated token's log-probabilities (the request's logprobs). */
typedef struct {
    int32_t token;
    float logprob;
    size_t text_off; /* where its text starts in the choice's text (bytes) */
    int32_t n_top; /* -1: the prompt's first token (no log-probability: null) */
    int32_t top_ids[GPTC_MAX_TOP_LOGPROBS];
    float top_logprobs[GPTC_MAX_TOP_LOGPROBS];
} serve_logprob;

/* One sequence of a job: prompt `prompt`, choice `index` of the response. */
typedef struct {
    int32_t index;
    size_t prompt;
    serve_buf text;   /* the echoed prompt (echo), then the generated text */
    size_t gen_start; /* where the generated text starts */
    size_t ready;     /* text[0, ready) is final; the rest may yet be cut by a stop sequence */
    /* One piece per token (and one first for the echo): the end of the
     * ready text after it. A stream sends each piece as one chunk. */
    size_t *pieces;
    size_t *piece_lps; /* n_lps when each piece was made */
    size_t n_pieces, cap_pieces;
    size_t sent;        /* pieces a stream has sent (the HTTP side's) */
    serve_logprob *lps; /* one per generated token, when asked for */
    size_t n_lps, cap_lps;
    size_t lps_sent; /* the HTTP side's */
    int32_t n_tokens;   /* generated, eos included: what usage counts */
    const char *finish; /* "stop" or "length" once done; NULL while running */
    /* the engine's */
    uint64_t id; /* in the gptc_batch */
    gptc_detok *detok;
    double t_last;
} serve_choice;

typedef enum {
    SERVE_JOB_QUEUED,  /* submitted, not yet in the batch */
    SERVE_JOB_RUNNING, /* every choice was accepted by the batch */
    SERVE_JOB_DONE,    /* every choice finished (or the job was cancelled) */
    SERVE_JOB_FAILED,  /* refused by the batch or failed while running: see error */
} serve_job_state;

typedef struct serve_job {
    serve_completion req;
    serve_choice *choices; /* req.n_prompts * req.n */
    size_t n_choices, n_finished;
    serve_job_state state;
    serve_error error;
    int cancelled;
    double t_arrival;
    /* the engine's */
    struct worker *worker; /* the one that runs it */
    int refs;
    int first_token;
    pthread_cond_t cv;
    struct serve_job *next;
} serve_job;

typedef struct serve_engine serve_engine;

/*
 * Starts the engine: a thread and a gptc_batch with `bp` for each of the
 * n_models models (one per GPU with --devices; all of one checkpoint), each
 * request going to the least busy one. `max_waiting` sequences may wait for
 * room in a batch beyond max_batch running ones (more is 429). The models
 * and tokenizer stay the caller's and must outlive the engine.
 */
gptc_status serve_engine_new(gptc_model *const *models, size_t n_models, const gptc_tokenizer *tok,
                             const gptc_batch_params *bp, size_t max_waiting, serve_metrics *metrics,
                             serve_engine **out);
/* Stops the threads; jobs still running fail ("shutting down"). Every HTTP
 * thread must be gone (no job referenced). */
void serve_engine_free(serve_engine *e);

/* Sequences one request may ask for at most (max_batch + max_waiting: one
 * worker's). */
size_t serve_engine_max_sequences(const serve_engine *e);

/*
 * Hands a parsed request to the engine (*req is moved into the job and
 * zeroed). Returns 1 with *out (the caller's reference: release it), or 0
 * with *err: 429 when the queue is full, 500 when memory ran out.
 */
int serve_engine_submit(serve_engine *e, serve_completion *req, double t_arrival, serve_job **out,
                        serve_error *err);

void serve_engine_lock(serve_engine *e);
void serve_engine_unlock(serve_engine *e);

/* What a waiter waits for; called with the lock held. */
typedef int (*serve_job_pred)(const serve_job *j);
int serve_job_accepted(const serve_job *j); /* no longer QUEUED */
int serve_job_finished(const serve_job *j); /* DONE or FAILED */
int serve_job_has_news(const serve_job *j); /* finished, or a piece not sent yet */

/*
 * Waits (without the lock) until pred(j). `fd` (or -1) is the client's
 * socket: a client that closes its connection gets its job cancelled within
 * ~20 ms. deadline (monotonic seconds, 0: none) cancels the job too.
 * Returns 1 when pred holds, -1 when the client left, -2 at the deadline.
 */
int serve_job_wait(serve_engine *e, serve_job *j, serve_job_pred pred, int fd, double deadline);

/* Stops a job's sequences (their cache is freed at the engine's next turn). */
void serve_job_cancel(serve_engine *e, serve_job *j);
/* Drops the caller's reference. */
void serve_job_release(serve_engine *e, serve_job *j);

/* The gauges of /metrics. */
void serve_engine_gauges(serve_engine *e, serve_gauges *g);

/* Monotonic seconds. */
double serve_now(void);

#endif
