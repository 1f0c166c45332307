/* tests/fuzz/make_seeds.c -- writes the seed checkpoints of fuzz_safetensors.
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
 *      -LBUILD -ldeepdefense -o make_seeds && ./make_seeds tests/fuzz/corpus/safetensors
 *
 * Files are named *.st, not *.safetensors, which .gitignore excludes.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <deepdefense/deepdefense.h>

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

static void save(dd_model *m, const char *dir, const char *name) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    ok(dd_model_save(m, path), path);
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
    return 0;
}
