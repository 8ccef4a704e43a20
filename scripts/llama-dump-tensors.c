// Dumps llama.cpp's intermediate F32 tensors (cb_eval) for one llama_decode of the
// given token ids, as JSON lines {name, ne, values}: the reference side of
// scripts/trace-vs-llama.sh. Built against the llama.cpp that
// ../shared/tools/build-llama-cpp.sh installs; ours, written for this project.
// usage: llama-dump-tensors MODEL OUT.jsonl f32|f16 TOKEN...
#include "llama.h"
#include "ggml.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
static FILE *out;
static bool cb(struct ggml_tensor *t, bool ask, void *ud) {
    if (ask) return t->type == GGML_TYPE_F32;
    if (t->type != GGML_TYPE_F32 || !ggml_is_contiguous(t)) return true;
    int64_t n = ggml_nelements(t);
    fprintf(out, "{\"name\":\"%s\",\"ne\":[%lld,%lld,%lld,%lld],\"values\":[", t->name,
            (long long)t->ne[0], (long long)t->ne[1], (long long)t->ne[2], (long long)t->ne[3]);
    const float *d = (const float *)t->data;
    for (int64_t i = 0; i < n; i++) fprintf(out, "%s%.9g", i ? "," : "", d[i]);
    fprintf(out, "]}\n");
    return true;
}
int main(int argc, char **argv) {
    // argv: model out.jsonl f32|f16 tok...
    out = fopen(argv[2], "w");
    llama_backend_init();
    struct llama_model_params mp = llama_model_default_params();
    struct llama_model *m = llama_model_load_from_file(argv[1], mp);
    struct llama_context_params cp = llama_context_default_params();
    cp.n_ctx = 256; cp.n_batch = 256; cp.n_ubatch = 256; cp.n_threads = 1; cp.n_threads_batch = 1;
    if (strcmp(argv[3], "f32") == 0) { cp.type_k = GGML_TYPE_F32; cp.type_v = GGML_TYPE_F32; cp.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_DISABLED; }
    cp.cb_eval = cb; cp.cb_eval_user_data = NULL;
    struct llama_context *ctx = llama_init_from_model(m, cp);
    int n = argc - 4;
    llama_token *toks = malloc(sizeof(llama_token) * n);
    for (int i = 0; i < n; i++) toks[i] = atoi(argv[4 + i]);
    struct llama_batch b = llama_batch_get_one(toks, n);
    if (llama_decode(ctx, b)) { fprintf(stderr, "decode failed\n"); return 1; }
    fclose(out);
    return 0;
}
