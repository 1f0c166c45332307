/* tests/fuzz/fuzz_safetensors.c -- libFuzzer target for the checkpoint loader.
 *
 * The input is one whole safetensors file. The library reads checkpoints
 * only from paths (dd_model_load), so the bytes are put in an anonymous
 * in-memory file (memfd_create, no disk traffic) that is opened again
 * through /proc/self/fd/N: the loader then runs its real path, fstat and
 * pread included. Whatever the bytes, the load must return a status without
 * crashing, leaking or reading out of bounds, and leave *out NULL on
 * failure. When it succeeds the model is exercised: every parameter is read
 * back (must be finite: the loader refuses NaN/Inf), one forward pass runs,
 * and save + load must reproduce the parameters bit for bit.
 *
 * The model is loaded with one thread and max_batch 1 (dd_model_load_ex), so
 * that one input costs a few milliseconds and the activations of a hostile
 * architecture stay within one sample. A header may still describe an
 * architecture whose single-sample activations need gigabytes (the library
 * refuses only above 64 GB); run the target with
 * ASAN_OPTIONS=allocator_may_return_null=1:max_allocation_size_mb=1024 so that
 * such a request fails inside the allocator and must come back as
 * DD_ERR_OUT_OF_MEMORY, which is a tested path too. Seeds, small checkpoints
 * of every node type with and without GFA hooks, live in
 * tests/fuzz/corpus/safetensors (written by tests/fuzz/make_seeds.c).
 *
 * Build: cmake -DCMAKE_C_COMPILER=clang -DDD_BUILD_FUZZ=ON (tests/fuzz/CMakeLists.txt).
 * Run:   ./fuzz_safetensors -max_total_time=60 CORPUS_DIR tests/fuzz/corpus/safetensors
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* memfd_create */
#endif
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <deepdefense/io.h>
#include <deepdefense/model.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Writes size bytes to a new anonymous file; its /proc path goes to path.
 * Returns the descriptor (keep it open while the path is used) or -1. */
static int fuzz_st_memfile(const void *data, size_t size, char *path, size_t path_size) {
    int fd = memfd_create("fuzz-checkpoint", MFD_CLOEXEC);
    if (fd < 0) return -1;
    const unsigned char *p = data;
    while (size > 0) {
        ssize_t w = write(fd, p, size);
        if (w <= 0) {
            close(fd);
            return -1;
        }
        p += w;
        size -= (size_t)w;
    }
    snprintf(path, path_size, "/proc/self/fd/%d", fd);
    return fd;
}

/* Every parameter of m as one array (malloc'ed, *count floats); NULL if none. */
static float *fuzz_st_params(const dd_model *m, size_t *count) {
    int np = 0;
    *count = 0;
    if (dd_model_num_params(m, &np) != DD_OK) abort();
    size_t total = 0;
    for (int i = 0; i < np; i++) {
        dd_param_info pi;
        pi.struct_size = sizeof pi;
        if (dd_model_param_info(m, i, &pi) != DD_OK) abort();
        total += pi.count;
    }
    float *all = malloc((total ? total : 1) * sizeof *all);
    if (all == NULL) return NULL;
    size_t off = 0;
    for (int i = 0; i < np; i++) {
        dd_param_info pi;
        pi.struct_size = sizeof pi;
        if (dd_model_param_info(m, i, &pi) != DD_OK ||
            dd_model_param_read(m, i, all + off, pi.count) != DD_OK)
            abort();
        off += pi.count;
    }
    *count = total;
    return all;
}

/* A successfully loaded model: finite parameters, a forward pass, and a
 * save/load round trip that keeps every bit. */
static void fuzz_st_exercise(dd_model *m, const dd_model_options *opts) {
    size_t count;
    float *params = fuzz_st_params(m, &count);
    if (params == NULL) return;
    for (size_t i = 0; i < count; i++)
        if (!isfinite(params[i])) abort();

    int c, h, w, k;
    if (dd_model_input_shape(m, &c, &h, &w) != DD_OK || dd_model_num_classes(m, &k) != DD_OK) abort();
    size_t in = (size_t)c * (size_t)h * (size_t)w;
    float *x = calloc(in, sizeof *x);
    float *logits = malloc((size_t)k * sizeof *logits);
    if (x != NULL && logits != NULL) {
        for (size_t i = 0; i < in; i++) x[i] = (float)(i % 7) / 7.0f;
        dd_status s = dd_model_forward(m, x, 1, DD_EVAL, logits);
        /* Finite weights can still overflow to Inf: DD_ERR_NUMERIC is fine. */
        if (s != DD_OK && s != DD_ERR_NUMERIC && s != DD_ERR_OUT_OF_MEMORY && s != DD_ERR_BACKEND) abort();
    }
    free(x);
    free(logits);

    /* dd_model_save renames a temporary file over its target, which a
     * /proc/self/fd link cannot take: save into a private directory. */
    char dir[] = "/tmp/dd-fuzz-XXXXXX", path[64];
    if (mkdtemp(dir) != NULL) {
        snprintf(path, sizeof path, "%s/m.st", dir);
        dd_status s = dd_model_save(m, path);
        if (s == DD_OK) {
            dd_model *g = NULL;
            s = dd_model_load_ex(path, opts, 1, &g);
            if (s == DD_OK) {
                size_t count2;
                float *params2 = fuzz_st_params(g, &count2);
                if (params2 != NULL &&
                    (count2 != count || memcmp(params, params2, count * sizeof *params) != 0))
                    abort(); /* the round trip changed a parameter */
                free(params2);
                dd_model_destroy(g);
            } else if (s != DD_ERR_OUT_OF_MEMORY && s != DD_ERR_BACKEND) {
                abort(); /* the library cannot read what it wrote */
            }
        } else if (s != DD_ERR_OUT_OF_MEMORY && s != DD_ERR_IO) {
            abort();
        }
        unlink(path);
        rmdir(dir);
    }
    free(params);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char path[64];
    int fd = fuzz_st_memfile(data, size, path, sizeof path);
    if (fd < 0) return 0;
    dd_model_options opts;
    dd_model_options_init(&opts);
    opts.num_threads = 1;
    dd_model *m = NULL;
    dd_status s = dd_model_load_ex(path, &opts, 1, &m);
    close(fd);
    if (s != DD_OK) {
        if (m != NULL) abort(); /* a failed constructor must leave *out NULL */
        /* io.h: a readable file is either loaded or refused as malformed
         * (the engine's own refusals are translated to DD_ERR_FORMAT). */
        if (s != DD_ERR_FORMAT && s != DD_ERR_OUT_OF_MEMORY && s != DD_ERR_BACKEND) abort();
        return 0;
    }
    fuzz_st_exercise(m, &opts);
    dd_model_destroy(m);
    return 0;
}
