/*
 * py_abi_layout.c - prints the size and field offsets of the structures that
 * the Python package (python/gptc/_capi.py) declares with ctypes, as one JSON
 * object, so that tests/test_python.py can check both agree with gptc.h.
 */
#include <stddef.h>
#include <stdio.h>

#include "gptc.h"

#define FIELD(T, f) printf("%s\"%s\": %zu", first ? "" : ", ", #f, offsetof(T, f)), first = 0

int main(void) {
    int first;
    printf("{\"gptc_config\": {\"sizeof\": %zu, \"fields\": {", sizeof(gptc_config));
    first = 1;
    FIELD(gptc_config, n_vocab);
    FIELD(gptc_config, n_ctx);
    FIELD(gptc_config, n_embd);
    FIELD(gptc_config, n_layer);
    FIELD(gptc_config, n_head);
    FIELD(gptc_config, n_inner);
    FIELD(gptc_config, layer_norm_epsilon);
    FIELD(gptc_config, activation);
    FIELD(gptc_config, scale_attn_weights);
    FIELD(gptc_config, scale_attn_by_inverse_layer_idx);
    FIELD(gptc_config, reorder_and_upcast_attn);
    FIELD(gptc_config, bos_token_id);
    FIELD(gptc_config, eos_token_id);
    FIELD(gptc_config, dtype);
    printf("}},\n \"gptc_model_params\": {\"sizeof\": %zu, \"fields\": {", sizeof(gptc_model_params));
    first = 1;
    FIELD(gptc_model_params, n_threads);
    FIELD(gptc_model_params, backend);
    FIELD(gptc_model_params, dtype);
    FIELD(gptc_model_params, progress);
    FIELD(gptc_model_params, progress_user);
    FIELD(gptc_model_params, device);
    printf("}},\n \"gptc_batch_params\": {\"sizeof\": %zu, \"fields\": {", sizeof(gptc_batch_params));
    first = 1;
    FIELD(gptc_batch_params, kv_memory);
    FIELD(gptc_batch_params, max_batch);
    FIELD(gptc_batch_params, max_prefill_tokens);
    FIELD(gptc_batch_params, fast_decode);
    printf("}},\n \"gptc_generate_params\": {\"sizeof\": %zu, \"fields\": {",
           sizeof(gptc_generate_params));
    first = 1;
    FIELD(gptc_generate_params, max_new_tokens);
    FIELD(gptc_generate_params, max_length);
    FIELD(gptc_generate_params, min_new_tokens);
    FIELD(gptc_generate_params, do_sample);
    FIELD(gptc_generate_params, temperature);
    FIELD(gptc_generate_params, top_k);
    FIELD(gptc_generate_params, top_p);
    FIELD(gptc_generate_params, repetition_penalty);
    FIELD(gptc_generate_params, no_repeat_ngram_size);
    FIELD(gptc_generate_params, seed);
    FIELD(gptc_generate_params, eos_token_ids);
    FIELD(gptc_generate_params, n_eos_token_ids);
    FIELD(gptc_generate_params, stop_strings);
    FIELD(gptc_generate_params, n_stop_strings);
    FIELD(gptc_generate_params, truncate_prompt);
    FIELD(gptc_generate_params, num_beams);
    FIELD(gptc_generate_params, length_penalty);
    FIELD(gptc_generate_params, early_stopping);
    FIELD(gptc_generate_params, num_return_sequences);
    FIELD(gptc_generate_params, presence_penalty);
    FIELD(gptc_generate_params, frequency_penalty);
    printf("}},\n \"sizeof_gptc_dtype\": %zu, \"sizeof_gptc_status\": %zu, "
           "\"sizeof_gptc_early_stopping\": %zu}\n",
           sizeof(gptc_dtype), sizeof(gptc_status), sizeof(gptc_early_stopping));
    return 0;
}
