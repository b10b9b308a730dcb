/*
 * serve.h - `gptc serve`, the OpenAI-compatible HTTP server (tools/serve*.c),
 * as the CLI's command table sees it.
 *
 * The server parses its own flags but shares the CLI's model flags (-m,
 * --revision, --threads, --backend, --dtype), its model loading and its size
 * parser: gptc.c hands them over through serve_cli, so that there is one
 * implementation of each.
 */
#ifndef GPTC_SERVE_H
#define GPTC_SERVE_H

#include "gptc.h"

typedef struct {
    void *opts; /* the CLI's own options, passed back to the calls below */
    /* argv[*i] is a model flag: consumes it (and its value); 1 taken, 0 not a
     * model flag, -1 bad (the error is printed). */
    int (*model_flag)(void *opts, int argc, char **argv, int *i);
    /* Resolves -m (the demo model when absent; a Hub id through the cache) and
     * loads it on `device` (gptc_model_params.device; -1: the CLI's --device):
     * 0, or the exit status
     * after printing the error. *dir is the resolved folder, owned by opts. */
    int (*load_model)(void *opts, int device, gptc_model **m, const char **dir);
    /* "4GiB" and the like; 0 on error (printed, naming flag). */
    int (*parse_size)(const char *flag, const char *s, unsigned long long *out);
    /* A decimal integer in [lo, hi]; 0 on error (printed, naming flag). */
    int (*parse_long)(const char *flag, const char *s, long lo, long hi, long *out);
} serve_cli;

/* `gptc serve ...` (argv[0] is "serve"): the process's exit status. */
int serve_main(int argc, char **argv, const serve_cli *cli);

#endif
