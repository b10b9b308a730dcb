/*
 * test_model.c - model loading through the public API: the progress
 * callback (what `gptc` shows on a terminal while a large checkpoint loads)
 * reports fractions that only grow and end at 1 once the model is ready,
 * and a load that fails never reports 1.
 *
 *     GPTC_ROOT=. build/tests/test_model
 */
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "gptc.h"
#include "internal.h"

typedef struct {
    int calls, monotonic;
    float last;
} progress_log;

static void on_progress(float f, void *user) {
    progress_log *p = user;
    if (p->calls && f < p->last) p->monotonic = 0;
    if (!(f >= 0.0f && f <= 1.0f)) p->monotonic = 0;
    p->last = f;
    p->calls++;
}

int main(void) {
    const char *root = getenv("GPTC_ROOT");
    char *dir = gptc_path_join(root ? root : ".", "tests/fixtures/sharded-f16-silu");
    char *bad = gptc_path_join(root ? root : ".", "tests/fixtures/no-such-model");
    gptc_model_params mp = gptc_model_default_params();
    CHECK(mp.progress == NULL && mp.progress_user == NULL, "no progress callback by default");
    progress_log log = {0, 1, 0};
    mp.n_threads = 1;
    mp.backend = "cpu";
    mp.progress = on_progress;
    mp.progress_user = &log;
    gptc_model *m = NULL;
    CHECK(dir && gptc_model_load(dir, &mp, &m) == GPTC_OK, "load: %s", gptc_last_error());
    int layers = m ? gptc_model_config(m)->n_layer : 0;
    CHECK(log.calls == layers + 1, "one call per layer and one at the end: %d calls for %d layers", log.calls,
          layers);
    CHECK(log.monotonic && log.last == 1.0f, "fractions grow and end at 1 (last %g)", (double)log.last);
    gptc_model_free(m);
    progress_log fail = {0, 1, 0};
    mp.progress_user = &fail;
    m = NULL;
    CHECK(bad && gptc_model_load(bad, &mp, &m) != GPTC_OK && !m, "a missing folder fails");
    CHECK(fail.last < 1.0f, "a failed load never reports 1");
    free(dir);
    free(bad);
    printf("%d checks, %d failed\n", g_checks, g_fail);
    return g_fail ? 1 : 0;
}
