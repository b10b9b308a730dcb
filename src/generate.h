/*
 * generate.h - what the generation loops share (generate.c, beam.c); not part
 * of the API.
 */
#ifndef GPTC_GENERATE_H
#define GPTC_GENERATE_H

#include <stddef.h>
#include <stdint.h>

#include "gptc.h"

/*
 * Checks every parameter and the prompt, and works out how many tokens to
 * generate (*max_new, 0 when there is nothing to do), as gptc_generate
 * documents. With p->truncate_prompt a prompt that leaves no room is cut to
 * its last tokens: *prompt and *n_prompt are updated. Errors name the
 * argument at fault.
 */
gptc_status gptc_generate_prepare(const gptc_model *m, const gptc_tokenizer *tok,
                                  const gptc_generate_params *p, const int32_t **prompt,
                                  size_t *n_prompt, int64_t *max_new);

#endif
