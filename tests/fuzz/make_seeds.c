/* tests/fuzz/make_seeds.c -- writes the seeds of fuzz_safetensors (whole
 * checkpoints, corpus/safetensors, *.st), fuzz_arch (their architecture
 * JSON alone, corpus/arch, *.json) and fuzz_optstate (optimizer states after
 * three steps, one per optimizer, corpus/optstate, *.bin).
 *
 * A fuzzer mutates its seeds, so the seeds should already reach every
 * branch of the loader that a valid file reaches: every node type of the
 * architecture JSON (normalize, conv2d with and without bias, batchnorm,
 * relu, maxpool, avgpool, global_avgpool, add, flatten, linear), GFA hooks
 * in both modes, and a model without hooks. The models are tiny (a few
 * hundred parameters) so that each seed is a few kilobytes and a fuzzing
 * run spends its time in the parser, not in copying weights. Parameters
 * are randomised by the model's seed, so the data section is not all
 * zeros. The output is deterministic: rerunning it rewrites the same files
 * (metadata aside, which carries the library version).
 *
 *   cc -std=c11 -Iinclude -IBUILD/include tests/fuzz/make_seeds.c \
 *      -LBUILD -ldeepdefense -o make_seeds && ./make_seeds tests/fuzz/corpus
 *
 * Files are named *.st, not *.safetensors, which .gitignore excludes.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <deepdefense/deepdefense.h>

/* the model and optimizers of fuzz_optstate (its entry point renamed away) */
#define LLVMFuzzerTestOneInput fuzz_optstate_unused
#include "fuzz_optstate.c"
#undef LLVMFuzzerTestOneInput

static void ok(dd_status s, const char *what) {
    if (s == DD_OK) return;
    fprintf(stderr, "make_seeds: %s: %s: %s\n", what, dd_status_string(s), dd_last_error());
    exit(1);
}

static dd_model *new_model(int c, int h, int w, int k, uint64_t seed) {
    dd_model_options o;
    dd_model_options_init(&o);
    o.num_threads = 1;
    o.seed = seed;
    dd_model *m = NULL;
    ok(dd_model_create(&m, c, h, w, k, &o), "dd_model_create");
    return m;
}

/* Every node type but flatten: normalize, conv (bias / none), batchnorm,
 * relu, add (a residual), maxpool, avgpool, global average pool, linear. */
static dd_model *conv_net(uint64_t seed) {
    dd_model *m = new_model(2, 6, 6, 3, seed);
    const float mean[2] = {0.5f, 0.25f}, std[2] = {0.5f, 2.0f};
    dd_node norm, c1, bn, act, c2, sum, mp, ap, gp, fc;
    ok(dd_model_add_normalize(m, DD_INPUT, mean, std, 2, "norm", &norm), "normalize");
    dd_conv2d_options co;
    dd_conv2d_options_init(&co);
    co.out_channels = 3;
    co.pad_h = co.pad_w = 1;
    co.name = "conv1";
    ok(dd_model_add_conv2d(m, norm, &co, &c1), "conv1");
    dd_batchnorm_options bo;
    dd_batchnorm_options_init(&bo);
    bo.name = "bn1";
    ok(dd_model_add_batchnorm(m, c1, &bo, &bn), "bn1");
    ok(dd_model_add_relu(m, bn, "relu1", &act), "relu1");
    co.bias = 0;
    co.name = "conv2";
    ok(dd_model_add_conv2d(m, act, &co, &c2), "conv2");
    ok(dd_model_add_add(m, act, c2, "res", &sum), "add");
    dd_pool_options po;
    dd_pool_options_init(&po);
    po.name = "mp";
    ok(dd_model_add_maxpool(m, sum, &po, &mp), "maxpool"); /* 3x3 */
    po.kernel_h = po.kernel_w = 2;
    po.stride_h = po.stride_w = 1;
    po.pad_h = po.pad_w = 1;
    po.name = "ap";
    ok(dd_model_add_avgpool(m, mp, &po, &ap), "avgpool"); /* 4x4 */
    ok(dd_model_add_global_avgpool(m, ap, "gap", &gp), "gavgpool");
    ok(dd_model_add_linear(m, gp, 3, 1, "fc", &fc), "linear");
    ok(dd_model_build(m, fc, 2), "build");
    return m;
}

/* flatten -> linear -> relu -> linear (no bias), the MLP shape. */
static dd_model *mlp(uint64_t seed) {
    dd_model *m = new_model(1, 3, 3, 4, seed);
    dd_node fl, l1, r, l2;
    ok(dd_model_add_flatten(m, DD_INPUT, "flat", &fl), "flatten");
    ok(dd_model_add_linear(m, fl, 5, 1, "fc1", &l1), "fc1");
    ok(dd_model_add_relu(m, l1, NULL, &r), "relu");
    ok(dd_model_add_linear(m, r, 4, 0, "fc2", &l2), "fc2");
    ok(dd_model_build(m, l2, 3), "build");
    return m;
}

static void write_file(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    if (f == NULL || fwrite(data, 1, n, f) != n || fclose(f) != 0) {
        fprintf(stderr, "make_seeds: cannot write %s\n", path);
        exit(1);
    }
}

/* The "deepdefense.arch" string of the checkpoint at path, unescaped into
 * out (the writer escapes only quote, backslash, slash and control bytes). */
static size_t arch_of(const char *path, char *out, size_t cap) {
    static char buf[1 << 20];
    FILE *f = fopen(path, "rb");
    size_t n = f ? fread(buf, 1, sizeof buf - 1, f) : 0;
    if (f) fclose(f);
    buf[n] = '\0';
    const char *key = "\"deepdefense.arch\":\"";
    const char *p = n > 8 ? strstr(buf + 8, key) : NULL;
    if (p == NULL) {
        fprintf(stderr, "make_seeds: no architecture in %s\n", path);
        exit(1);
    }
    size_t k = 0;
    for (p += strlen(key); *p && *p != '"' && k + 1 < cap; p++) {
        if (*p != '\\') {
            out[k++] = *p;
            continue;
        }
        p++;
        if (*p == 'n')
            out[k++] = '\n';
        else if (*p == 't')
            out[k++] = '\t';
        else if (*p == 'u') {
            out[k++] = (char)strtol((char[]){p[1], p[2], p[3], p[4], 0}, NULL, 16);
            p += 4;
        } else
            out[k++] = *p;
    }
    return k;
}

static void save(dd_model *m, const char *dir, const char *name) {
    char path[4096], arch[4096], json[1 << 16];
    snprintf(path, sizeof path, "%s/safetensors/%s", dir, name);
    ok(dd_model_save(m, path), path);
    dd_model_destroy(m);
    size_t n = arch_of(path, json, sizeof json);
    snprintf(arch, sizeof arch, "%s/arch/%.*s.json", dir, (int)(strlen(name) - 3), name);
    write_file(arch, json, n);
}

/* fuzz_optstate's seeds: each optimizer's state after three steps on the
 * target's model, with its selector byte first. */
static void optstates(const char *dir) {
    static const char *names[4] = {"sgd", "sgd_nesterov", "adam", "adamw"};
    dd_model *m = fuzz_os_model();
    float x[2 * 16];
    int32_t y[2] = {0, 2};
    for (int i = 0; i < 2 * 16; i++) x[i] = (float)((i * 7) % 11) / 11.0f;
    for (int k = 0; k < 4; k++) {
        dd_optimizer *opt = fuzz_os_optimizer(m, k);
        for (int t = 0; t < 3; t++) {
            ok(dd_model_zero_grad(m), "zero_grad");
            ok(dd_model_forward(m, x, 2, DD_TRAIN, NULL), "forward");
            ok(dd_model_backward(m, y, NULL), "backward");
            ok(dd_optimizer_step(opt), "step");
        }
        size_t n;
        unsigned char *st = fuzz_os_state(opt, &n);
        unsigned char *seed = malloc(n + 1);
        seed[0] = (unsigned char)k;
        memcpy(seed + 1, st, n);
        char path[4096];
        snprintf(path, sizeof path, "%s/optstate/%s.bin", dir, names[k]);
        write_file(path, seed, n + 1);
        free(seed);
        free(st);
        dd_optimizer_destroy(opt);
    }
    dd_model_destroy(m);
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: make_seeds OUTPUT_DIR\n");
        return 2;
    }
    const char *dir = argv[1];
    save(conv_net(1), dir, "conv_net.st");

    dd_model *m = conv_net(2);
    ok(dd_gfa_hook_defaults(m, 0.5f, DD_GFA_SIN2), "gfa defaults");
    save(m, dir, "conv_net_gfa_sin2.st");

    m = conv_net(3);
    ok(dd_gfa_hook(m, DD_INPUT, 0.25f), "gfa input");
    ok(dd_gfa_hook(m, 5, 1.0f), "gfa add");
    ok(dd_gfa_set_mode(m, DD_GFA_TANGENT), "gfa mode");
    save(m, dir, "conv_net_gfa_tangent.st");

    save(mlp(4), dir, "mlp.st");

    m = mlp(5);
    ok(dd_gfa_hook_defaults(m, 0.02f, DD_GFA_SIN2), "gfa defaults");
    save(m, dir, "mlp_gfa.st");
    optstates(dir);
    return 0;
}
