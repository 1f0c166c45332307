/* tests/fuzz/fuzz_checkpoint.h -- what the checkpoint fuzz targets share
 * (fuzz_safetensors.c: whole files; fuzz_arch.c: the architecture JSON
 * alone): the bytes as an anonymous in-memory file, and the checks run on
 * a model that loaded. Static functions behind an include guard, so
 * tests/check_fuzz.c can include both targets. */
#ifndef DD_FUZZ_CHECKPOINT_H
#define DD_FUZZ_CHECKPOINT_H
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
        if (dd_model_param_info(m, i, &pi) != DD_OK) abort();
        total += pi.count;
    }
    float *all = malloc((total ? total : 1) * sizeof *all);
    if (all == NULL) return NULL;
    size_t off = 0;
    for (int i = 0; i < np; i++) {
        dd_param_info pi;
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

/* Loads the checkpoint bytes file[0, n) with one thread and max_batch 1: a
 * status, *out NULL on failure, and the checks above on success. */
static void fuzz_st_load(const void *file, size_t n) {
    char path[64];
    int fd = fuzz_st_memfile(file, n, path, sizeof path);
    if (fd < 0) return;
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
        return;
    }
    fuzz_st_exercise(m, &opts);
    dd_model_destroy(m);
}

#endif
