/* tests/check_io.c -- checkpoints: safetensors save/load and the architecture.
 *
 * Round trip: a small model with every node type, built through the public
 * API, with randomised weights and trained batch-norm statistics, is saved
 * and loaded; the loaded model must give bitwise the same eval logits, hold
 * bitwise the same parameters, and save to a byte-identical file.
 *
 * Format: the file is read back by an independent tiny JSON parser written
 * here (not jansson), which checks the safetensors layout: length prefix,
 * padded header, F32 entries with PyTorch shapes, offsets tiling the data
 * section, and the data equal to dd_model_param_read.
 *
 * Hostile files: a generator here writes safetensors files from the
 * parameters, with one defect each (bad lengths, JSON, dtype, shape,
 * offsets, missing/extra tensors, truncation, bad architecture). Each must
 * give DD_ERR_FORMAT (DD_ERR_IO for a missing file) with a message, no
 * model, and no change to a model given to dd_model_load_weights.
 *
 * Durability: a save failing at each stage (dd__io_fail_at) leaves the
 * previous checkpoint loadable and no temporary file; allocation failures
 * during load and save give DD_ERR_OUT_OF_MEMORY and change nothing.
 */
#define _POSIX_C_SOURCE 200809L

#include <check.h>
#include <dirent.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <deepdefense/deepdefense.h>

#include "internal.h"

#define NC 5    /* classes of the test model */
#define BATCH 4 /* its max_batch */
#define IMG (3 * 8 * 8)

/* ======================================================================== */
/* Utilities                                                                 */
/* ======================================================================== */

/* One scratch directory per test case, made and removed by an unchecked
 * fixture (run in the runner's process, so it is removed even when a test
 * fails or crashes in its forked child). */
static char tmpdir[256];

static void make_tmpdir(void) {
    snprintf(tmpdir, sizeof tmpdir, "/tmp/dd_check_io_XXXXXX");
    if (!mkdtemp(tmpdir)) /* the tests then fail on their first file */
        snprintf(tmpdir, sizeof tmpdir, "/nonexistent/dd_check_io");
}

static void remove_tmpdir(void) {
    DIR *d = opendir(tmpdir);
    if (!d) return;
    struct dirent *e;
    char p[600];
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
        snprintf(p, sizeof p, "%s/%s", tmpdir, e->d_name);
        unlink(p);
    }
    closedir(d);
    rmdir(tmpdir);
}

static const char *tpath(const char *name) {
    static char buf[4][600];
    static int k;
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof buf[k], "%s/%s", tmpdir, name);
    return buf[k];
}

static unsigned char *read_all(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    ck_assert_msg(f != NULL, "cannot open %s", path);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *buf = malloc((size_t)n + 1);
    ck_assert_ptr_nonnull(buf);
    ck_assert_uint_eq(fread(buf, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    *len = (size_t)n;
    return buf;
}

static void write_all(const char *path, const void *data, size_t len) {
    FILE *f = fopen(path, "wb");
    ck_assert_ptr_nonnull(f);
    if (len) ck_assert_uint_eq(fwrite(data, 1, len, f), len);
    ck_assert_int_eq(fclose(f), 0);
}

/* Number of entries of tmpdir whose name starts with prefix. */
static int count_prefixed(const char *prefix) {
    DIR *d = opendir(tmpdir);
    ck_assert_ptr_nonnull(d);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) n += strncmp(e->d_name, prefix, strlen(prefix)) == 0;
    closedir(d);
    return n;
}

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static double urand(void) /* xorshift64*, [0, 1) */
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return (double)((rng_state * 0x2545f4914f6cdd1dull) >> 11) / 9007199254740992.0;
}

static void put_f32le(unsigned char *p, float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    for (int b = 0; b < 4; b++) p[b] = (unsigned char)(u >> (8 * b));
}

static uint64_t get_u64le(const unsigned char *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

static void put_u64le(unsigned char *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (8 * i));
}

#define OK(expr)                                                                                 \
    do {                                                                                         \
        dd_status s_ = (expr);                                                                   \
        ck_assert_msg(s_ == DD_OK, "%s: %s (%s)", #expr, dd_status_string(s_), dd_last_error()); \
    } while (0)

/* ======================================================================== */
/* The test model: every node type                                           */
/* ======================================================================== */

/* input(3,8,8) -> normalize -> conv1 3x3 p1 (16) -> bn1 -> relu -> maxpool 2
 * -> [conv2 3x3 p1 no bias] -> add (residual) -> avgpool 2 -> flatten -> fc1
 * and add -> global avgpool -> fc2 (no bias); logits = fc1 + fc2. */
static dd_model *build_model(uint64_t seed) {
    dd_model_options o;
    dd_model_options_init(&o);
    o.seed = seed;
    dd_model *m = NULL;
    OK(dd_model_create(&m, 3, 8, 8, NC, &o));
    const float mean[3] = {0.49f, 0.48f, 0.45f}, std[3] = {0.25f, 0.24f, 0.26f};
    dd_node n_norm, n_c1, n_bn, n_relu, n_p1, n_c2, n_res, n_p2, n_flat, n_fc1, n_gap, n_fc2, n_out;
    OK(dd_model_add_normalize(m, DD_INPUT, mean, std, 3, "norm", &n_norm));
    dd_conv2d_options c;
    dd_conv2d_options_init(&c);
    /* 16 channels: the engine's blocked layout (nChw16c) wants full blocks
     * for its fast convolution kernels */
    c.out_channels = 16;
    c.kernel_h = c.kernel_w = 3;
    c.pad_h = c.pad_w = 1;
    c.name = "conv1";
    OK(dd_model_add_conv2d(m, n_norm, &c, &n_c1));
    dd_batchnorm_options b;
    dd_batchnorm_options_init(&b);
    b.name = "bn1";
    b.momentum = 0.25f;
    OK(dd_model_add_batchnorm(m, n_c1, &b, &n_bn));
    OK(dd_model_add_relu(m, n_bn, "relu1", &n_relu));
    dd_pool_options p;
    dd_pool_options_init(&p);
    p.name = "pool1";
    OK(dd_model_add_maxpool(m, n_relu, &p, &n_p1));
    c.bias = 0;
    c.name = "conv2";
    OK(dd_model_add_conv2d(m, n_p1, &c, &n_c2));
    OK(dd_model_add_add(m, n_p1, n_c2, "res", &n_res));
    p.name = "pool2";
    OK(dd_model_add_avgpool(m, n_res, &p, &n_p2));
    OK(dd_model_add_flatten(m, n_p2, "flat", &n_flat));
    OK(dd_model_add_linear(m, n_flat, NC, 1, "fc1", &n_fc1));
    OK(dd_model_add_global_avgpool(m, n_res, "gap", &n_gap));
    OK(dd_model_add_linear(m, n_gap, NC, 0, "fc2", &n_fc2));
    OK(dd_model_add_add(m, n_fc1, n_fc2, "logits", &n_out));
    OK(dd_model_build(m, n_out, BATCH));
    return m;
}

static void random_images(float *x, int n) {
    for (int i = 0; i < n * IMG; i++) x[i] = (float)urand();
}

/* Random trainable weights (so the file, not the seed, explains a match)
 * and two training-mode passes (so the running statistics are not their
 * initial values). */
static void randomise(dd_model *m) {
    int np;
    OK(dd_model_num_params(m, &np));
    for (int i = 0; i < np; i++) {
        dd_param_info pi;
        memset(&pi, 0, sizeof pi);
        OK(dd_model_param_info(m, i, &pi));
        if (!pi.trainable) continue;
        float *v = malloc(pi.count * sizeof *v);
        for (size_t j = 0; j < pi.count; j++) v[j] = (float)(urand() - 0.5);
        OK(dd_model_param_write(m, i, v, pi.count));
        free(v);
    }
    float x[BATCH * IMG];
    for (int k = 0; k < 2; k++) {
        random_images(x, BATCH);
        OK(dd_model_forward(m, x, BATCH, DD_TRAIN, NULL));
    }
}

/* A copy of every parameter. */
typedef struct snap {
    int n;
    char name[64][96];
    int ndims[64];
    int64_t dims[64][4];
    size_t count[64];
    float *data[64];
} snap;

static void snap_take(const dd_model *m, snap *s) {
    memset(s, 0, sizeof *s);
    OK(dd_model_num_params(m, &s->n));
    ck_assert_int_le(s->n, 64);
    for (int i = 0; i < s->n; i++) {
        dd_param_info pi;
        memset(&pi, 0, sizeof pi);
        OK(dd_model_param_info(m, i, &pi));
        snprintf(s->name[i], sizeof s->name[i], "%s", pi.name);
        s->ndims[i] = pi.ndims;
        memcpy(s->dims[i], pi.dims, sizeof pi.dims);
        s->count[i] = pi.count;
        s->data[i] = malloc(pi.count * sizeof(float) + 1);
        OK(dd_model_param_read(m, i, s->data[i], pi.count));
    }
}

static void snap_free(snap *s) {
    for (int i = 0; i < s->n; i++) free(s->data[i]);
    s->n = 0;
}

static void snap_assert_equal(const snap *a, const snap *b) {
    ck_assert_int_eq(a->n, b->n);
    for (int i = 0; i < a->n; i++) {
        ck_assert_str_eq(a->name[i], b->name[i]);
        ck_assert_int_eq(a->ndims[i], b->ndims[i]);
        for (int d = 0; d < a->ndims[i]; d++) ck_assert_int_eq(a->dims[i][d], b->dims[i][d]);
        ck_assert_uint_eq(a->count[i], b->count[i]);
        ck_assert_msg(memcmp(a->data[i], b->data[i], a->count[i] * sizeof(float)) == 0,
                      "parameter %s differs", a->name[i]);
    }
}

static void eval_logits(dd_model *m, const float *x, int n, float *logits) {
    OK(dd_model_forward(m, x, n, DD_EVAL, logits));
}

/* ======================================================================== */
/* An independent tiny JSON parser (enough for a safetensors header)         */
/* ======================================================================== */

typedef struct jv {
    char type; /* 'o' object, 'a' array, 's' string, 'n' number, 'b' bool, 'z' null */
    char *str; /* string value, or number text */
    double num;
    int n; /* items of an object or array */
    char **keys;
    struct jv **items;
} jv;

typedef struct jp {
    const char *p, *end;
    int err;
} jp;

static void jv_free(jv *v) {
    if (!v) return;
    for (int i = 0; i < v->n; i++) {
        if (v->keys) free(v->keys[i]);
        jv_free(v->items[i]);
    }
    free(v->keys);
    free(v->items);
    free(v->str);
    free(v);
}

static void jp_ws(jp *j) {
    while (j->p < j->end && (*j->p == ' ' || *j->p == '\n' || *j->p == '\r' || *j->p == '\t')) j->p++;
}

static char *jp_string(jp *j) {
    if (j->p >= j->end || *j->p != '"') {
        j->err = 1;
        return NULL;
    }
    j->p++;
    size_t cap = 16, n = 0;
    char *s = malloc(cap);
    while (j->p < j->end && *j->p != '"') {
        unsigned c = (unsigned char)*j->p++;
        if (c == '\\') {
            if (j->p >= j->end) break;
            char e = *j->p++;
            switch (e) {
            case 'n':
                c = '\n';
                break;
            case 't':
                c = '\t';
                break;
            case 'r':
                c = '\r';
                break;
            case 'b':
                c = '\b';
                break;
            case 'f':
                c = '\f';
                break;
            case 'u': {
                if (j->end - j->p < 4) {
                    j->err = 1;
                    break;
                }
                char hex[5] = {j->p[0], j->p[1], j->p[2], j->p[3], 0};
                c = (unsigned)strtoul(hex, NULL, 16);
                j->p += 4;
                if (c >= 0x80) /* only ASCII is expected in our headers */
                    j->err = 1;
                break;
            }
            default:
                c = (unsigned char)e;
                break;
            }
        }
        if (n + 2 > cap) s = realloc(s, cap *= 2);
        s[n++] = (char)c;
    }
    if (j->p >= j->end)
        j->err = 1;
    else
        j->p++;
    s[n] = '\0';
    return s;
}

static jv *jp_value(jp *j, int depth);

static void jv_push(jv *v, char *key, jv *item) {
    v->items = realloc(v->items, (size_t)(v->n + 1) * sizeof *v->items);
    if (v->type == 'o') v->keys = realloc(v->keys, (size_t)(v->n + 1) * sizeof *v->keys);
    if (v->type == 'o') v->keys[v->n] = key;
    v->items[v->n++] = item;
}

static jv *jp_value(jp *j, int depth) {
    jp_ws(j);
    if (j->p >= j->end || depth > 64) {
        j->err = 1;
        return NULL;
    }
    jv *v = calloc(1, sizeof *v);
    char c = *j->p;
    if (c == '{' || c == '[') {
        v->type = c == '{' ? 'o' : 'a';
        char close = c == '{' ? '}' : ']';
        j->p++;
        jp_ws(j);
        if (j->p < j->end && *j->p == close) {
            j->p++;
            return v;
        }
        while (!j->err) {
            char *key = NULL;
            jp_ws(j);
            if (v->type == 'o') {
                key = jp_string(j);
                jp_ws(j);
                if (j->err || j->p >= j->end || *j->p != ':') {
                    free(key);
                    j->err = 1;
                    break;
                }
                j->p++;
            }
            jv *item = jp_value(j, depth + 1);
            jv_push(v, key, item);
            jp_ws(j);
            if (j->err || j->p >= j->end) {
                j->err = 1;
                break;
            }
            if (*j->p == ',') {
                j->p++;
                continue;
            }
            if (*j->p == close) {
                j->p++;
                break;
            }
            j->err = 1;
        }
    } else if (c == '"') {
        v->type = 's';
        v->str = jp_string(j);
    } else if (c == '-' || (c >= '0' && c <= '9')) {
        v->type = 'n';
        const char *s = j->p;
        while (j->p < j->end && strchr("+-0123456789.eE", *j->p)) j->p++;
        v->str = strndup(s, (size_t)(j->p - s));
        v->num = strtod(v->str, NULL);
    } else if (j->end - j->p >= 4 && memcmp(j->p, "true", 4) == 0) {
        v->type = 'b', v->num = 1, j->p += 4;
    } else if (j->end - j->p >= 5 && memcmp(j->p, "false", 5) == 0) {
        v->type = 'b', j->p += 5;
    } else if (j->end - j->p >= 4 && memcmp(j->p, "null", 4) == 0) {
        v->type = 'z', j->p += 4;
    } else {
        j->err = 1;
    }
    return v;
}

/* Parses text[0, len) as one JSON value followed only by whitespace. */
static jv *jv_parse(const char *text, size_t len) {
    jp j = {text, text + len, 0};
    jv *v = jp_value(&j, 0);
    jp_ws(&j);
    if (j.err || j.p != j.end) {
        jv_free(v);
        return NULL;
    }
    return v;
}

static jv *jv_get(const jv *o, const char *key) {
    if (!o || o->type != 'o') return NULL;
    for (int i = 0; i < o->n; i++)
        if (strcmp(o->keys[i], key) == 0) return o->items[i];
    return NULL;
}

/* Integer value of a number without fraction or exponent, else -1. */
static long long jv_int(const jv *v) {
    if (!v || v->type != 'n' || strpbrk(v->str, ".eE")) return -1;
    return strtoll(v->str, NULL, 10);
}

/* ======================================================================== */
/* Round trip and format                                                     */
/* ======================================================================== */

START_TEST(test_round_trip) {
    dd_model *a = build_model(7);
    randomise(a);
    const char *f1 = tpath("a.safetensors"), *f2 = tpath("b.safetensors");
    OK(dd_model_save(a, f1));

    dd_model *b = NULL;
    OK(dd_model_load(f1, &b));
    ck_assert_ptr_nonnull(b);

    /* Structure: nodes, types, names, inputs, shapes, configuration. */
    int na, nb;
    OK(dd_model_num_nodes(a, &na));
    OK(dd_model_num_nodes(b, &nb));
    ck_assert_int_eq(na, nb);
    for (int i = 0; i < na; i++) {
        dd_node_info ia, ib;
        memset(&ia, 0, sizeof ia);
        memset(&ib, 0, sizeof ib);
        OK(dd_model_node_info(a, i, &ia));
        OK(dd_model_node_info(b, i, &ib));
        ck_assert_int_eq(ia.type, ib.type);
        ck_assert_str_eq(ia.name, ib.name);
        ck_assert_int_eq(ia.num_inputs, ib.num_inputs);
        for (int k = 0; k < ia.num_inputs; k++) ck_assert_int_eq(ia.inputs[k], ib.inputs[k]);
        ck_assert_int_eq(ia.channels, ib.channels);
        ck_assert_int_eq(ia.height, ib.height);
        ck_assert_int_eq(ia.width, ib.width);
    }
    int mb = 0;
    OK(dd_model_max_batch(b, &mb));
    ck_assert_int_eq(mb, BATCH);

    /* Parameters and buffers: bitwise. */
    snap sa, sb;
    snap_take(a, &sa);
    snap_take(b, &sb);
    snap_assert_equal(&sa, &sb);

    /* Eval logits: bitwise, at full and partial batch. */
    float x[BATCH * IMG], la[BATCH * NC], lb[BATCH * NC];
    random_images(x, BATCH);
    for (int n = BATCH; n >= 1; n -= 3) {
        eval_logits(a, x, n, la);
        eval_logits(b, x, n, lb);
        ck_assert_msg(memcmp(la, lb, (size_t)n * NC * sizeof(float)) == 0,
                      "logits differ after load (n = %d)", n);
    }

    /* Architecture (and everything else): saving the loaded model gives the
     * same bytes. */
    OK(dd_model_save(b, f2));
    size_t l1, l2;
    unsigned char *d1 = read_all(f1, &l1), *d2 = read_all(f2, &l2);
    ck_assert_uint_eq(l1, l2);
    ck_assert_msg(memcmp(d1, d2, l1) == 0, "re-saved checkpoint differs");
    free(d1);
    free(d2);
    ck_assert_int_eq(count_prefixed("a.safetensors.tmp"), 0);

    /* load_weights into a fresh model of the same architecture (other seed). */
    dd_model *c = build_model(99);
    snap sc;
    OK(dd_model_load_weights(c, f1));
    snap_take(c, &sc);
    snap_assert_equal(&sa, &sc);
    float lc[BATCH * NC];
    eval_logits(a, x, BATCH, la);
    eval_logits(c, x, BATCH, lc);
    ck_assert(memcmp(la, lc, sizeof la) == 0);

    snap_free(&sa);
    snap_free(&sb);
    snap_free(&sc);
    dd_model_destroy(a);
    dd_model_destroy(b);
    dd_model_destroy(c);
}
END_TEST

START_TEST(test_load_ex_options) {
    dd_model *a = build_model(3);
    randomise(a);
    const char *f = tpath("m.safetensors");
    OK(dd_model_save(a, f));
    dd_model_options o;
    dd_model_options_init(&o);
    o.num_threads = 1;
    dd_model *b = NULL;
    OK(dd_model_load_ex(f, &o, 2, &b));
    int mb = 0;
    OK(dd_model_max_batch(b, &mb));
    ck_assert_int_eq(mb, 2);
    float x[2 * IMG], la[2 * NC], lb[2 * NC];
    random_images(x, 2);
    eval_logits(a, x, 2, la);
    eval_logits(b, x, 2, lb);
    for (int i = 0; i < 2 * NC; i++) /* other thread count: not bitwise */
        ck_assert_float_eq_tol(la[i], lb[i], 1e-5f * (1.0f + fabsf(la[i])));
    ck_assert_int_eq(dd_model_forward(b, x, 3, DD_EVAL, NULL), DD_ERR_INVALID_ARGUMENT);
    dd_model *c = (dd_model *)&c;
    ck_assert_int_eq(dd_model_load_ex(f, NULL, -1, &c), DD_ERR_INVALID_ARGUMENT);
    ck_assert_ptr_null(c);
    /* bad options are the caller's fault, not the file's */
    o.num_threads = -1;
    c = (dd_model *)&c;
    ck_assert_int_eq(dd_model_load_ex(f, &o, 0, &c), DD_ERR_INVALID_ARGUMENT);
    ck_assert_ptr_null(c);
    dd_model_destroy(a);
    dd_model_destroy(b);
}
END_TEST

/* The file as safetensors specifies it, read without the library. */
START_TEST(test_format_independent_parser) {
    dd_model *m = build_model(5);
    randomise(m);
    const char *f = tpath("m.safetensors");
    OK(dd_model_save(m, f));
    size_t len;
    unsigned char *buf = read_all(f, &len);
    ck_assert_uint_ge(len, 8);
    uint64_t n = get_u64le(buf);
    ck_assert_uint_eq(n % 8, 0);
    ck_assert_uint_le(8 + n, len);
    ck_assert_int_eq(buf[8], '{');
    jv *h = jv_parse((const char *)buf + 8, (size_t)n); /* trailing padding is whitespace */
    ck_assert_msg(h != NULL, "header does not parse");
    ck_assert_int_eq(h->type, 'o');

    jv *meta = jv_get(h, "__metadata__");
    ck_assert_ptr_nonnull(meta);
    ck_assert_int_eq(meta->type, 'o');
    for (int i = 0; i < meta->n; i++)
        ck_assert_int_eq(meta->items[i]->type, 's'); /* safetensors: strings only */
    ck_assert_str_eq(jv_get(meta, "format")->str, "pt");
    ck_assert_str_eq(jv_get(meta, "deepdefense.version")->str, dd_version_string());
    jv *archs = jv_get(meta, "deepdefense.arch");
    ck_assert_ptr_nonnull(archs);
    jv *arch = jv_parse(archs->str, strlen(archs->str));
    ck_assert_msg(arch != NULL, "architecture is not JSON");
    ck_assert_str_eq(jv_get(arch, "format")->str, "deepdefense-arch");
    ck_assert_int_eq(jv_int(jv_get(arch, "version")), 1);
    ck_assert_int_eq(jv_int(jv_get(arch, "num_classes")), NC);
    ck_assert_int_eq(jv_int(jv_get(arch, "max_batch")), BATCH);
    jv *in = jv_get(arch, "input");
    ck_assert_int_eq(in->n, 3);
    ck_assert_int_eq(jv_int(in->items[0]), 3);
    ck_assert_int_eq(jv_int(in->items[1]), 8);
    ck_assert_int_eq(jv_int(in->items[2]), 8);
    jv *nodes = jv_get(arch, "nodes");
    int nn;
    OK(dd_model_num_nodes(m, &nn));
    ck_assert_int_eq(nodes->n, nn);
    static const char *const type_names[] = {"input",     "normalize", "conv2d",  "linear",
                                             "relu",      "maxpool",   "avgpool", "global_avgpool",
                                             "batchnorm", "add",       "flatten"};
    for (int i = 0; i < nn; i++) {
        dd_node_info ni;
        memset(&ni, 0, sizeof ni);
        OK(dd_model_node_info(m, i, &ni));
        jv *node = nodes->items[i];
        ck_assert_str_eq(jv_get(node, "type")->str, type_names[ni.type]);
        ck_assert_str_eq(jv_get(node, "name")->str, ni.name);
        jv *inputs = jv_get(node, "inputs");
        ck_assert_int_eq(inputs->n, ni.num_inputs);
        for (int k = 0; k < ni.num_inputs; k++) ck_assert_int_eq(jv_int(inputs->items[k]), ni.inputs[k]);
        if (ni.type == DD_NODE_CONV2D) {
            ck_assert_int_eq(jv_int(jv_get(node, "out_channels")), 16);
            ck_assert_int_eq(jv_int(jv_get(node, "kernel")->items[0]), 3);
            ck_assert_int_eq(jv_int(jv_get(node, "pad")->items[1]), 1);
        }
        if (ni.type == DD_NODE_BATCHNORM)
            ck_assert_double_eq((double)(float)jv_get(node, "momentum")->num, (double)0.25f);
    }
    ck_assert_int_eq(jv_int(jv_get(arch, "logits")), nn - 1);

    /* Tensors: every parameter, F32, its shape, data equal to param_read,
     * offsets tiling the data section. */
    snap s;
    snap_take(m, &s);
    ck_assert_int_eq(h->n, s.n + 1);
    uint64_t data_len = len - 8 - n, covered = 0;
    unsigned char *seen = calloc(data_len + 1, 1);
    for (int i = 0; i < s.n; i++) {
        jv *e = jv_get(h, s.name[i]);
        ck_assert_msg(e != NULL, "tensor %s missing", s.name[i]);
        ck_assert_str_eq(jv_get(e, "dtype")->str, "F32");
        jv *shape = jv_get(e, "shape"), *off = jv_get(e, "data_offsets");
        ck_assert_int_eq(shape->n, s.ndims[i]);
        for (int d = 0; d < s.ndims[i]; d++) ck_assert_int_eq(jv_int(shape->items[d]), s.dims[i][d]);
        ck_assert_int_eq(off->n, 2);
        long long b = jv_int(off->items[0]), en = jv_int(off->items[1]);
        ck_assert(b >= 0 && en >= b && (uint64_t)en <= data_len);
        ck_assert_int_eq(en - b, (long long)(4 * s.count[i]));
        for (long long k = b; k < en; k++) {
            ck_assert_msg(!seen[k], "byte %lld of the data section used twice", k);
            seen[k] = 1;
        }
        covered += (uint64_t)(en - b);
        unsigned char *expect = malloc(4 * s.count[i] + 1);
        for (size_t k = 0; k < s.count[i]; k++) put_f32le(expect + 4 * k, s.data[i][k]);
        ck_assert_msg(memcmp(buf + 8 + n + b, expect, 4 * s.count[i]) == 0, "data of %s differs", s.name[i]);
        free(expect);
    }
    ck_assert_uint_eq(covered, data_len);
    /* batch-norm buffers are in the file (PyTorch names) */
    ck_assert_ptr_nonnull(jv_get(h, "bn1.running_mean"));
    ck_assert_ptr_nonnull(jv_get(h, "bn1.running_var"));
    ck_assert_ptr_nonnull(jv_get(h, "conv1.weight"));

    free(seen);
    snap_free(&s);
    jv_free(arch);
    jv_free(h);
    free(buf);
    dd_model_destroy(m);
}
END_TEST

/* GFA hooks and mode survive the trip, and the loaded model's GFA step
 * (which needs the GFA buffers laid out at build) matches the original. */
START_TEST(test_gfa_hooks_round_trip) {
    dd_model *a = build_model(17);
    randomise(a);
    OK(dd_gfa_hook_defaults(a, 0.05f, DD_GFA_TANGENT));
    OK(dd_gfa_hook(a, 7, 0.3f)); /* the residual sum, a middle tensor */
    int nh = 0;
    OK(dd_gfa_num_hooks(a, &nh));
    ck_assert_int_ge(nh, 3);
    const char *f = tpath("gfa.safetensors");
    OK(dd_model_save(a, f));
    dd_model *b = NULL;
    OK(dd_model_load(f, &b));
    int nb = 0;
    OK(dd_gfa_num_hooks(b, &nb));
    ck_assert_int_eq(nb, nh);
    for (int i = 0; i < nh; i++) {
        dd_node ta, tb;
        float la, lb;
        OK(dd_gfa_get_hook(a, i, &ta, &la));
        OK(dd_gfa_get_hook(b, i, &tb, &lb));
        ck_assert_int_eq(ta, tb);
        ck_assert(la == lb);
    }
    dd_gfa_mode mode;
    OK(dd_gfa_get_mode(b, &mode));
    ck_assert_int_eq(mode, DD_GFA_TANGENT);

    float x[BATCH * IMG];
    int32_t labels[BATCH] = {0, 1, 2, 4};
    random_images(x, BATCH);
    dd_step_stats sa, sb;
    dd_step_stats_init(&sa);
    dd_step_stats_init(&sb);
    dd_model *ms[2] = {a, b};
    dd_step_stats *ss[2] = {&sa, &sb};
    for (int k = 0; k < 2; k++) {
        OK(dd_model_zero_grad(ms[k]));
        OK(dd_model_forward(ms[k], x, BATCH, DD_TRAIN, NULL));
        OK(dd_model_backward(ms[k], labels, ss[k]));
    }
    ck_assert_int_eq(sa.num_hooks, nh);
    ck_assert(sa.objective == sb.objective);
    ck_assert(sa.objective != sa.loss); /* the hooks did contribute */
    snap pa;
    snap_take(a, &pa);
    for (int i = 0; i < pa.n; i++) {
        dd_param_info pi;
        memset(&pi, 0, sizeof pi);
        OK(dd_model_param_info(a, i, &pi));
        if (!pi.trainable) continue;
        float *ga = malloc(pi.count * sizeof *ga), *gb = malloc(pi.count * sizeof *gb);
        OK(dd_model_grad_read(a, i, ga, pi.count));
        OK(dd_model_grad_read(b, i, gb, pi.count));
        ck_assert_msg(memcmp(ga, gb, pi.count * sizeof *ga) == 0, "GFA gradient of %s differs", pi.name);
        free(ga);
        free(gb);
    }
    snap_free(&pa);

    /* the training loss travels too (written only when not the default) */
    dd_loss_kind lk;
    OK(dd_model_get_loss(b, &lk));
    ck_assert_int_eq(lk, DD_LOSS_CE);
    OK(dd_model_set_loss(a, DD_LOSS_MSE));
    ck_assert_int_eq(dd_model_set_loss(a, (dd_loss_kind)2), DD_ERR_INVALID_ARGUMENT);
    ck_assert_int_eq(dd_model_get_loss(a, NULL), DD_ERR_INVALID_ARGUMENT);
    OK(dd_model_save(a, f));
    dd_model_destroy(b);
    OK(dd_model_load(f, &b));
    OK(dd_model_get_loss(b, &lk));
    ck_assert_int_eq(lk, DD_LOSS_MSE);
    for (int k = 0; k < 2; k++) {
        OK(dd_model_zero_grad(ms[k] = k ? b : a));
        OK(dd_model_forward(ms[k], x, BATCH, DD_EVAL, NULL));
        OK(dd_model_backward(ms[k], labels, ss[k]));
    }
    ck_assert(sa.loss == sb.loss);
    ck_assert(sa.loss > 0 && sa.loss < 1); /* an MSE of probabilities, not a cross-entropy */

    /* a model without hooks loads without hooks */
    OK(dd_gfa_clear(a));
    OK(dd_model_set_loss(a, DD_LOSS_CE));
    OK(dd_model_save(a, f));
    dd_model_destroy(b);
    OK(dd_model_load(f, &b));
    OK(dd_gfa_num_hooks(b, &nb));
    ck_assert_int_eq(nb, 0);
    OK(dd_model_get_loss(b, &lk));
    ck_assert_int_eq(lk, DD_LOSS_CE);
    dd_model_destroy(a);
    dd_model_destroy(b);
}
END_TEST

/* ======================================================================== */
/* Hostile files                                                             */
/* ======================================================================== */

typedef struct sbuf {
    char *p;
    size_t n, cap;
} sbuf;

static void sb_printf(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(sbuf *b, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (b->n + (size_t)k + 1 > b->cap) {
        b->cap = (b->n + (size_t)k + 1) * 2;
        b->p = realloc(b->p, b->cap);
    }
    va_start(ap, fmt);
    vsnprintf(b->p + b->n, (size_t)k + 1, fmt, ap);
    va_end(ap);
    b->n += (size_t)k;
}

static void sb_json_string(sbuf *b, const char *s) {
    sb_printf(b, "\"");
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            sb_printf(b, "\\%c", c);
        else if (c < 0x20)
            sb_printf(b, "\\u%04x", c);
        else
            sb_printf(b, "%c", c);
    }
    sb_printf(b, "\"");
}

/* Replaces the first occurrence of `from` in s (which must contain it). */
static char *replace_once(const char *s, const char *from, const char *to) {
    const char *at = strstr(s, from);
    ck_assert_msg(at != NULL, "\"%s\" not found in the architecture", from);
    size_t n = strlen(s) - strlen(from) + strlen(to);
    char *r = malloc(n + 1);
    size_t pre = (size_t)(at - s);
    memcpy(r, s, pre);
    strcpy(r + pre, to);
    strcat(r, at + strlen(from));
    return r;
}

enum mut {
    M_NONE,
    M_NO_META,
    M_NO_ARCH,
    M_F16,
    M_SHAPE,
    M_OFF_RANGE,
    M_OFF_REVERSED,
    M_OFF_LEN,
    M_OFF_OVERLAP,
    M_MISSING,
    M_EXTRA,
    M_TRUNC,
    M_NAN,
    M_META_NOT_STRING,
    M_ARCH_TYPE,
    M_ARCH_FWD,
    M_ARCH_NEG_KERNEL,
    M_ARCH_UNKNOWN_FIELD,
    M_ARCH_BAD_JSON,
    M_ARCH_HUGE_WEIGHTS,
    M_ARCH_HUGE_BATCH,
    M_ARCH_BAD_HOOK,
    M_ARCH_NEG_LAMBDA,
    M_COUNT
};
static const char *const mut_names[M_COUNT] = {
    "none",
    "no metadata",
    "no arch",
    "F16",
    "shape",
    "offsets out of range",
    "offsets reversed",
    "offsets wrong length",
    "offsets overlap",
    "missing tensor",
    "extra tensor",
    "truncated data",
    "NaN",
    "metadata not a string",
    "arch bad type",
    "arch forward input",
    "arch negative kernel",
    "arch unknown field",
    "arch bad JSON",
    "arch huge weights",
    "arch huge max_batch",
    "arch hook on a missing tensor",
    "arch negative lambda",
};

/* The saved architecture string of a model (through the independent parser). */
static char *saved_arch(const char *path) {
    size_t len;
    unsigned char *buf = read_all(path, &len);
    uint64_t n = get_u64le(buf);
    jv *h = jv_parse((const char *)buf + 8, (size_t)n);
    ck_assert_ptr_nonnull(h);
    char *arch = strdup(jv_get(jv_get(h, "__metadata__"), "deepdefense.arch")->str);
    jv_free(h);
    free(buf);
    return arch;
}

/* Writes a safetensors file of the parameters in s with one defect. */
static void gen_file(const char *path, const snap *s, const char *arch_in, enum mut mut) {
    char *arch = strdup(arch_in);
    char *t = NULL;
    if (mut == M_ARCH_TYPE) t = replace_once(arch, "\"type\":\"relu\"", "\"type\":\"gelu\"");
    if (mut == M_ARCH_FWD) /* node 1 (normalize) reading node 7 */
        t = replace_once(arch, "\"inputs\":[0]", "\"inputs\":[7]");
    if (mut == M_ARCH_NEG_KERNEL) t = replace_once(arch, "\"kernel\":[3,3]", "\"kernel\":[-3,3]");
    if (mut == M_ARCH_UNKNOWN_FIELD)
        t = replace_once(arch, "\"kernel\":[3,3]", "\"dilation\":[2,2],\"kernel\":[3,3]");
    if (mut == M_ARCH_BAD_JSON) t = replace_once(arch, "\"nodes\":[", "\"nodes\":[[");
    /* 130 GB of weights the file does not hold: refused before anything is
     * allocated; 16M samples: refused by dd_model_build */
    if (mut == M_ARCH_HUGE_WEIGHTS) { /* both convolutions, so the residual add fits */
        char *t1 = replace_once(arch, "\"out_channels\":16", "\"out_channels\":60000");
        t = replace_once(t1, "\"out_channels\":16", "\"out_channels\":60000");
        free(t1);
    }
    if (mut == M_ARCH_BAD_HOOK)
        t = replace_once(arch, "\"hooks\":[]", "\"hooks\":[{\"tensor\":99,\"lambda\":1}]");
    if (mut == M_ARCH_NEG_LAMBDA)
        t = replace_once(arch, "\"hooks\":[]", "\"hooks\":[{\"tensor\":0,\"lambda\":-1}]");
    if (mut == M_ARCH_HUGE_BATCH) t = replace_once(arch, "\"max_batch\":4", "\"max_batch\":16000000");
    if (t) {
        free(arch);
        arch = t;
    }

    sbuf h = {0};
    sb_printf(&h, "{");
    if (mut != M_NO_META) {
        sb_printf(&h, "\"__metadata__\":{\"format\":\"pt\"");
        if (mut != M_NO_ARCH) {
            sb_printf(&h, ",\"deepdefense.arch\":");
            sb_json_string(&h, arch);
        }
        if (mut == M_META_NOT_STRING) sb_printf(&h, ",\"epoch\":3");
        sb_printf(&h, "},");
    }
    int ntensors = mut == M_MISSING ? s->n - 1 : s->n;
    uint64_t off = 0;
    for (int i = 0; i < ntensors; i++) {
        uint64_t b = off, e = off + 4 * s->count[i];
        int64_t dims[4];
        memcpy(dims, s->dims[i], sizeof dims);
        if (i == 0 && mut == M_SHAPE) { /* same count, other shape: reversed */
            for (int d = 0; d < s->ndims[i] / 2; d++) {
                int64_t x = dims[d];
                dims[d] = dims[s->ndims[i] - 1 - d];
                dims[s->ndims[i] - 1 - d] = x;
            }
            ck_assert_msg(memcmp(dims, s->dims[i], sizeof dims) != 0,
                          "tensor 0 has a symmetric shape; pick another for M_SHAPE");
        }
        uint64_t wb = b, we = e;
        if (i == ntensors - 1 && mut == M_OFF_RANGE) wb += 4, we += 4;
        if (i == 0 && mut == M_OFF_REVERSED) wb = e, we = b;
        if (i == 0 && mut == M_OFF_LEN) we = e - 4;
        if (i == 1 && mut == M_OFF_OVERLAP) /* tensor 1 starts inside tensor 0 */
            wb -= 4, we -= 4;
        sb_printf(&h, "%s", i ? "," : "");
        sb_json_string(&h, s->name[i]);
        sb_printf(&h, ":{\"dtype\":\"%s\",\"shape\":[", (i == 0 && mut == M_F16) ? "F16" : "F32");
        for (int d = 0; d < s->ndims[i]; d++) sb_printf(&h, "%s%lld", d ? "," : "", (long long)dims[d]);
        sb_printf(&h, "],\"data_offsets\":[%llu,%llu]}", (unsigned long long)wb, (unsigned long long)we);
        off = e;
    }
    if (mut == M_EXTRA) {
        sb_printf(&h,
                  ",\"extra.weight\":{\"dtype\":\"F32\",\"shape\":[2],"
                  "\"data_offsets\":[%llu,%llu]}",
                  (unsigned long long)off, (unsigned long long)(off + 8));
        off += 8;
    }
    sb_printf(&h, "}");
    while (h.n % 8) sb_printf(&h, " ");

    size_t data_len = (size_t)off;
    unsigned char *file = calloc(8 + h.n + data_len + 1, 1);
    put_u64le(file, h.n);
    memcpy(file + 8, h.p, h.n);
    unsigned char *d = file + 8 + h.n;
    for (int i = 0; i < ntensors; i++) {
        for (size_t k = 0; k < s->count[i]; k++, d += 4)
            put_f32le(d, (i == 0 && k == 0 && mut == M_NAN) ? NAN : s->data[i][k]);
    }
    size_t total = 8 + h.n + data_len;
    if (mut == M_TRUNC) total -= 4;
    write_all(path, file, total);
    free(file);
    free(h.p);
    free(arch);
}

/* Expected failure of loading path: status, no model, a message, and no
 * change to `victim` through dd_model_load_weights (when given). */
static void expect_fail(const char *path, dd_status want, const char *what, const char *mention,
                        dd_model *victim) {
    dd_model *m = (dd_model *)&m;
    dd_status s = dd_model_load(path, &m);
    ck_assert_msg(s == want, "%s: dd_model_load gave %s (%s), expected %s", what, dd_status_string(s),
                  dd_last_error(), dd_status_string(want));
    ck_assert_ptr_null(m);
    ck_assert_msg(strlen(dd_last_error()) > 0, "%s: no message", what);
    if (mention)
        ck_assert_msg(strstr(dd_last_error(), mention) != NULL, "%s: message \"%s\" lacks \"%s\"", what,
                      dd_last_error(), mention);
    if (victim) {
        snap before, after;
        snap_take(victim, &before);
        s = dd_model_load_weights(victim, path);
        ck_assert_msg(s != DD_OK, "%s: dd_model_load_weights accepted it", what);
        snap_take(victim, &after);
        snap_assert_equal(&before, &after);
        snap_free(&before);
        snap_free(&after);
    }
}

START_TEST(test_generated_files) {
    dd_model *m = build_model(11);
    randomise(m);
    const char *good = tpath("good.safetensors");
    OK(dd_model_save(m, good));
    char *arch = saved_arch(good);
    snap s;
    snap_take(m, &s);
    dd_model *victim = build_model(12);

    for (int k = 0; k < M_COUNT; k++) {
        char name[64];
        snprintf(name, sizeof name, "gen%d.safetensors", k);
        const char *p = tpath(name);
        gen_file(p, &s, arch, (enum mut)k);
        if (k == M_NONE) {
            /* the generator itself is right: its defect-free file loads */
            dd_model *g = NULL;
            OK(dd_model_load(p, &g));
            snap sg;
            snap_take(g, &sg);
            snap_assert_equal(&s, &sg);
            snap_free(&sg);
            dd_model_destroy(g);
            continue;
        }
        const char *mention = NULL;
        if (k == M_F16 || k == M_SHAPE || k == M_OFF_REVERSED || k == M_OFF_LEN || k == M_NAN)
            mention = s.name[0];
        if (k == M_OFF_RANGE) mention = s.name[s.n - 1];
        if (k == M_MISSING) mention = s.name[s.n - 1];
        if (k == M_EXTRA) mention = "extra.weight";
        if (k == M_ARCH_TYPE) mention = "gelu";
        if (k == M_ARCH_FWD || k == M_ARCH_NEG_KERNEL || k == M_ARCH_UNKNOWN_FIELD) mention = "node";
        if (k == M_ARCH_HUGE_WEIGHTS) mention = "bytes of weights";
        if (k == M_ARCH_HUGE_BATCH) mention = "max_batch";
        if (k == M_ARCH_BAD_HOOK || k == M_ARCH_NEG_LAMBDA) mention = "hooks";
        /* without arch metadata the weights alone are fine for load_weights */
        int weights_ok = k == M_NO_META || k == M_NO_ARCH || k >= M_ARCH_TYPE;
        expect_fail(p, DD_ERR_FORMAT, mut_names[k], mention, weights_ok ? NULL : victim);
        if (weights_ok) {
            dd_model *c = build_model(13);
            OK(dd_model_load_weights(c, p));
            snap sc;
            snap_take(c, &sc);
            snap_assert_equal(&s, &sc);
            snap_free(&sc);
            dd_model_destroy(c);
        }
    }
    snap_free(&s);
    free(arch);
    dd_model_destroy(m);
    dd_model_destroy(victim);
}
END_TEST

START_TEST(test_bad_lengths) {
    dd_model *victim = build_model(2);
    const char *p = tpath("bad.safetensors");
    unsigned char buf[64];

    expect_fail(tpath("does-not-exist.safetensors"), DD_ERR_IO, "missing file", NULL, NULL);
    ck_assert_int_eq(dd_model_load_weights(victim, tpath("nope")), DD_ERR_IO);
    expect_fail(tmpdir, DD_ERR_IO, "a directory", NULL, NULL);

    write_all(p, buf, 0);
    expect_fail(p, DD_ERR_FORMAT, "empty file", NULL, victim);

    memset(buf, 0, sizeof buf);
    write_all(p, buf, 5);
    expect_fail(p, DD_ERR_FORMAT, "5 bytes", NULL, victim);

    /* header length one past the end of the file */
    memset(buf, ' ', sizeof buf);
    buf[8] = '{';
    buf[9] = '}';
    put_u64le(buf, 64 - 8 + 1);
    write_all(p, buf, 64);
    expect_fail(p, DD_ERR_FORMAT, "header length > file", NULL, victim);

    /* 2^63 and 2^64-1: no overflow in 8 + N */
    put_u64le(buf, (uint64_t)1 << 63);
    write_all(p, buf, 64);
    expect_fail(p, DD_ERR_FORMAT, "header length 2^63", NULL, victim);
    put_u64le(buf, UINT64_MAX);
    write_all(p, buf, 64);
    expect_fail(p, DD_ERR_FORMAT, "header length 2^64-1", NULL, victim);
    put_u64le(buf, 100000001);
    write_all(p, buf, 64);
    expect_fail(p, DD_ERR_FORMAT, "header length above 100 MB", NULL, victim);

    /* header length 0 */
    put_u64le(buf, 0);
    write_all(p, buf, 8);
    expect_fail(p, DD_ERR_FORMAT, "empty header", NULL, victim);

    /* bad JSON */
    memcpy(buf + 8, "{\"a\":   ", 8);
    put_u64le(buf, 8);
    write_all(p, buf, 16);
    expect_fail(p, DD_ERR_FORMAT, "bad JSON", NULL, victim);

    /* JSON, but not an object */
    memcpy(buf + 8, "[1,2,3] ", 8);
    write_all(p, buf, 16);
    expect_fail(p, DD_ERR_FORMAT, "not an object", NULL, victim);

    /* an object without tensors or metadata */
    memcpy(buf + 8, "{}      ", 8);
    write_all(p, buf, 16);
    expect_fail(p, DD_ERR_FORMAT, "empty object", NULL, victim);

    /* metadata not an object; duplicate keys; NUL inside the header */
    const char *hdrs[] = {
        "{\"__metadata__\":[1]}    ",
        "{\"__metadata__\":{},\"__metadata__\":{}}   ",
        "{\"__metadata__\":{\"a\\u0000\":\"b\"}}",
        "{\"a\":1}\0       ",
    };
    for (size_t i = 0; i < sizeof hdrs / sizeof hdrs[0]; i++) {
        size_t hl = i == 3 ? 16 : strlen(hdrs[i]);
        ck_assert_uint_eq(hl % 8, 0);
        unsigned char f[128];
        put_u64le(f, hl);
        memcpy(f + 8, hdrs[i], hl);
        write_all(p, f, 8 + hl);
        expect_fail(p, DD_ERR_FORMAT, hdrs[i], NULL, victim);
    }
    dd_model_destroy(victim);
}
END_TEST

/* A valid file with a truncated copy of every length: never crashes,
 * always DD_ERR_FORMAT. */
START_TEST(test_every_truncation) {
    dd_model *m = build_model(4);
    const char *f = tpath("m.safetensors"), *t = tpath("t.safetensors");
    OK(dd_model_save(m, f));
    size_t len;
    unsigned char *buf = read_all(f, &len);
    uint64_t n = get_u64le(buf);
    /* every length through the header, then a stride through the data */
    for (size_t k = 0; k < len; k += k < 8 + n + 16 ? 1 : 97) {
        write_all(t, buf, k);
        dd_model *g = (dd_model *)&g;
        dd_status s = dd_model_load(t, &g);
        ck_assert_msg(s == DD_ERR_FORMAT, "truncated to %zu bytes: %s", k, dd_status_string(s));
        ck_assert_ptr_null(g);
    }
    free(buf);
    dd_model_destroy(m);
}
END_TEST

/* Random byte changes (seeded): every outcome is a clean DD_OK or
 * DD_ERR_FORMAT, never a crash (run under ASan in CI's sanitizer pass). */
START_TEST(test_random_corruption) {
    dd_model *m = build_model(6);
    const char *f = tpath("m.safetensors"), *t = tpath("t.safetensors");
    OK(dd_model_save(m, f));
    size_t len;
    unsigned char *buf = read_all(f, &len), *copy = malloc(len);
    uint64_t n = get_u64le(buf);
    rng_state = 12345;
    int ok = 0;
    for (int it = 0; it < 300; it++) {
        memcpy(copy, buf, len);
        int flips = 1 + (int)(urand() * 4);
        for (int k = 0; k < flips; k++) {
            /* mostly the header (where the parsing is), sometimes anywhere */
            size_t span = urand() < 0.8 ? (size_t)(8 + n) : len;
            size_t at = (size_t)(urand() * (double)span);
            if (urand() < 0.5)
                copy[at] = (unsigned char)(urand() * 256);
            else
                copy[at] ^= (unsigned char)(1u << (int)(urand() * 8));
        }
        write_all(t, copy, len);
        dd_model *g = (dd_model *)&g;
        dd_status s = dd_model_load(t, &g);
        ck_assert_msg(s == DD_OK || s == DD_ERR_FORMAT, "iteration %d: %s (%s)", it, dd_status_string(s),
                      dd_last_error());
        if (s == DD_OK) {
            ok++;
            dd_model_destroy(g);
        } else {
            ck_assert_ptr_null(g);
        }
    }
    ck_assert_int_lt(ok, 300); /* the corruptions were noticed at all */
    free(copy);
    free(buf);
    dd_model_destroy(m);
}
END_TEST

/* ======================================================================== */
/* Durability and failures                                                   */
/* ======================================================================== */

START_TEST(test_interrupted_save) {
    dd_model *m = build_model(21);
    randomise(m);
    const char *f = tpath("ckpt.safetensors");
    OK(dd_model_save(m, f));
    snap first;
    snap_take(m, &first);
    size_t len0;
    unsigned char *bytes0 = read_all(f, &len0);

    randomise(m); /* the model moves on */
    snap second;
    snap_take(m, &second);

    for (int stage = 1; stage <= 4; stage++) {
        dd__io_fail_at(stage);
        dd_status s = dd_model_save(m, f);
        ck_assert_msg(s == DD_ERR_IO, "stage %d: %s", stage, dd_status_string(s));
        ck_assert(strlen(dd_last_error()) > 0);
        ck_assert_int_eq(count_prefixed("ckpt.safetensors.tmp"), 0);
        size_t len1;
        unsigned char *bytes1 = read_all(f, &len1);
        ck_assert_uint_eq(len0, len1);
        ck_assert_msg(memcmp(bytes0, bytes1, len0) == 0, "stage %d changed the file", stage);
        free(bytes1);
        dd_model *g = NULL;
        OK(dd_model_load(f, &g));
        snap sg;
        snap_take(g, &sg);
        snap_assert_equal(&first, &sg);
        snap_free(&sg);
        dd_model_destroy(g);
    }
    /* the fault is one-shot: the next save succeeds */
    OK(dd_model_save(m, f));
    dd_model *g = NULL;
    OK(dd_model_load(f, &g));
    snap sg;
    snap_take(g, &sg);
    snap_assert_equal(&second, &sg);
    ck_assert_int_eq(count_prefixed("ckpt.safetensors.tmp"), 0);
    ck_assert_int_eq(count_prefixed("ckpt"), 1);

    /* a stale temporary file of the same name does not block a save */
    char stale[600];
    snprintf(stale, sizeof stale, "%s.tmp.%ld", f, (long)getpid());
    write_all(stale, "junk", 4);
    OK(dd_model_save(m, f));
    ck_assert_int_eq(count_prefixed("ckpt.safetensors.tmp"), 1); /* only the stale one */
    unlink(stale);

    /* a directory that does not exist: DD_ERR_IO, nothing created */
    ck_assert_int_eq(dd_model_save(m, tpath("no/such/dir.safetensors")), DD_ERR_IO);

    snap_free(&sg);
    snap_free(&first);
    snap_free(&second);
    free(bytes0);
    dd_model_destroy(g);
    dd_model_destroy(m);
}
END_TEST

START_TEST(test_invalid_arguments) {
    dd_model *m = build_model(1);
    const char *f = tpath("m.safetensors");
    ck_assert_int_eq(dd_model_save(NULL, f), DD_ERR_INVALID_ARGUMENT);
    ck_assert_int_eq(dd_model_save(m, NULL), DD_ERR_INVALID_ARGUMENT);
    ck_assert_int_eq(dd_model_save(m, ""), DD_ERR_INVALID_ARGUMENT);
    OK(dd_model_save(m, f));
    dd_model *g = (dd_model *)&g;
    ck_assert_int_eq(dd_model_load(NULL, &g), DD_ERR_INVALID_ARGUMENT);
    ck_assert_ptr_null(g);
    ck_assert_int_eq(dd_model_load(f, NULL), DD_ERR_INVALID_ARGUMENT);
    ck_assert_int_eq(dd_model_load_ex(f, NULL, 0, NULL), DD_ERR_INVALID_ARGUMENT);
    ck_assert_int_eq(dd_model_load_weights(NULL, f), DD_ERR_INVALID_ARGUMENT);
    ck_assert_int_eq(dd_model_load_weights(m, NULL), DD_ERR_INVALID_ARGUMENT);

    /* not built: DD_ERR_STATE */
    dd_model *u = NULL;
    OK(dd_model_create(&u, 3, 8, 8, NC, NULL));
    ck_assert_int_eq(dd_model_save(u, tpath("u.safetensors")), DD_ERR_STATE);
    ck_assert_int_eq(dd_model_load_weights(u, f), DD_ERR_STATE);
    dd_model_destroy(u);

    /* weights of another architecture: names or shapes differ */
    dd_model *other = NULL;
    OK(dd_model_create(&other, 3, 8, 8, NC, NULL));
    dd_node fl, fc;
    OK(dd_model_add_flatten(other, DD_INPUT, "flat", &fl));
    OK(dd_model_add_linear(other, fl, NC, 1, "fc1", &fc));
    OK(dd_model_build(other, fc, 2));
    ck_assert_int_eq(dd_model_load_weights(other, f), DD_ERR_FORMAT);
    const char *fo = tpath("other.safetensors");
    OK(dd_model_save(other, fo));
    ck_assert_int_eq(dd_model_load_weights(m, fo), DD_ERR_FORMAT);
    dd_model *g2 = NULL;
    OK(dd_model_load(fo, &g2)); /* a plain image -> linear model round-trips too */
    dd_model_destroy(g2);
    dd_model_destroy(other);
    dd_model_destroy(m);
}
END_TEST

START_TEST(test_out_of_memory) {
    dd_model *m = build_model(8);
    randomise(m);
    const char *f = tpath("m.safetensors");
    OK(dd_model_save(m, f));
    size_t len0;
    unsigned char *bytes0 = read_all(f, &len0);

    /* load: every allocation failure gives OOM and no model */
    dd_model *g = NULL;
    dd__alloc_fail_after(-1);
    OK(dd_model_load(f, &g));
    long total = dd__alloc_count();
    dd_model_destroy(g);
    ck_assert_int_gt(total, 0);
    for (long k = 0; k < total; k++) {
        g = (dd_model *)&g;
        dd__alloc_fail_after(k);
        dd_status s = dd_model_load(f, &g);
        dd__alloc_fail_after(-1);
        ck_assert_msg(s == DD_ERR_OUT_OF_MEMORY, "allocation %ld failing: %s (%s)", k, dd_status_string(s),
                      dd_last_error());
        ck_assert_ptr_null(g);
    }

    /* load_weights: OOM, weights unchanged */
    dd_model *v = build_model(9);
    dd__alloc_fail_after(-1);
    OK(dd_model_load_weights(v, f));
    total = dd__alloc_count();
    dd_model_destroy(v);
    v = build_model(9);
    snap before, after;
    snap_take(v, &before);
    for (long k = 0; k < total; k++) {
        dd__alloc_fail_after(k);
        dd_status s = dd_model_load_weights(v, f);
        dd__alloc_fail_after(-1);
        ck_assert_int_eq(s, DD_ERR_OUT_OF_MEMORY);
        snap_take(v, &after);
        snap_assert_equal(&before, &after);
        snap_free(&after);
    }

    /* save: OOM, the previous file intact, no temporary file */
    randomise(m);
    dd__alloc_fail_after(-1);
    OK(dd_model_save(m, tpath("other.safetensors")));
    total = dd__alloc_count();
    for (long k = 0; k < total; k++) {
        dd__alloc_fail_after(k);
        dd_status s = dd_model_save(m, f);
        dd__alloc_fail_after(-1);
        ck_assert_int_eq(s, DD_ERR_OUT_OF_MEMORY);
        size_t len1;
        unsigned char *bytes1 = read_all(f, &len1);
        ck_assert(len1 == len0 && memcmp(bytes0, bytes1, len0) == 0);
        free(bytes1);
        ck_assert_int_eq(count_prefixed("m.safetensors.tmp"), 0);
    }
    snap_free(&before);
    free(bytes0);
    dd_model_destroy(v);
    dd_model_destroy(m);
}
END_TEST

static Suite *io_suite(void) {
    Suite *s = suite_create("io");
    TCase *tc = tcase_create("round_trip");
    tcase_set_timeout(tc, 120);
    tcase_add_unchecked_fixture(tc, make_tmpdir, remove_tmpdir);
    tcase_add_test(tc, test_round_trip);
    tcase_add_test(tc, test_load_ex_options);
    tcase_add_test(tc, test_format_independent_parser);
    tcase_add_test(tc, test_gfa_hooks_round_trip);
    suite_add_tcase(s, tc);

    tc = tcase_create("hostile");
    tcase_set_timeout(tc, 120);
    tcase_add_unchecked_fixture(tc, make_tmpdir, remove_tmpdir);
    tcase_add_test(tc, test_generated_files);
    tcase_add_test(tc, test_bad_lengths);
    tcase_add_test(tc, test_every_truncation);
    tcase_add_test(tc, test_random_corruption);
    suite_add_tcase(s, tc);

    tc = tcase_create("failures");
    tcase_set_timeout(tc, 120);
    tcase_add_unchecked_fixture(tc, make_tmpdir, remove_tmpdir);
    tcase_add_test(tc, test_interrupted_save);
    tcase_add_test(tc, test_invalid_arguments);
    tcase_add_test(tc, test_out_of_memory);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) {
    SRunner *sr = srunner_create(io_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? 0 : 1;
}
