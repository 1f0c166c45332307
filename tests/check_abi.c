/* tests/check_abi.c -- the struct_size policy (deepdefense/status.h): every
 * public options, info and results struct is accepted from its first
 * released layout (DD_<NAME>_SIZE_V1) up to the library's sizeof, and the
 * library reads or writes only the caller's struct_size bytes.
 *
 * Each case plays a program built against the first layout: its struct is
 * a heap block of exactly DD_<NAME>_SIZE_V1 bytes followed by GUARD bytes
 * of 0xA5 (the program's next variable). Filled through the _sized
 * functions with that size, the struct must work with every function that
 * takes it, and the guard must stay 0xA5: a library that writes past the
 * struct changes it, one that reads past it reads 0xA5A5... as a field
 * (fuse_layers, num_shards, ...) and refuses the call or gives another
 * result. Under ASan the exact-size blocks also catch any access outside.
 * Sizes below the first layout and above the library's are refused with
 * DD_ERR_INVALID_ARGUMENT, never truncated.
 */
#include <check.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <deepdefense/deepdefense.h>

#define GUARD 64

/* A struct of `size` bytes followed by GUARD bytes of 0xA5 (the struct's
 * own bytes 0x5A, so nothing reads as zero by accident). */
static void *cut_struct(size_t size) {
    unsigned char *p = malloc(size + GUARD);
    ck_assert_ptr_nonnull(p);
    memset(p, 0x5A, size);
    memset(p + size, 0xA5, GUARD);
    return p;
}

static void assert_guard(const void *p, size_t size) {
    const unsigned char *g = (const unsigned char *)p + size;
    for (int i = 0; i < GUARD; i++)
        ck_assert_msg(g[i] == 0xA5, "byte %zu past a struct of %zu bytes was written", size + i, size);
}

static size_t size_of(const void *p) {
    size_t s;
    memcpy(&s, p, sizeof s);
    return s;
}

/* A small built model: input 1x4x4 -> conv 2 -> batch norm -> maxpool ->
 * flatten -> linear 3, the conv/bn/pool options passed as cut structs. */
static dd_model *small_model(const dd_model_options *mo, const dd_conv2d_options *co,
                             const dd_batchnorm_options *bo, const dd_pool_options *po) {
    dd_model *m = NULL;
    ck_assert_msg(dd_model_create(&m, 1, 4, 4, 3, mo) == DD_OK, "%s", dd_last_error());
    dd_node c, b, p, f, l;
    ck_assert_msg(dd_model_add_conv2d(m, DD_INPUT, co, &c) == DD_OK, "%s", dd_last_error());
    ck_assert_msg(dd_model_add_batchnorm(m, c, bo, &b) == DD_OK, "%s", dd_last_error());
    ck_assert_msg(dd_model_add_maxpool(m, b, po, &p) == DD_OK, "%s", dd_last_error());
    ck_assert_int_eq(dd_model_add_flatten(m, p, NULL, &f), DD_OK);
    ck_assert_int_eq(dd_model_add_linear(m, f, 3, 1, NULL, &l), DD_OK);
    ck_assert_msg(dd_model_build(m, l, 4) == DD_OK, "%s", dd_last_error());
    return m;
}

static dd_model *plain_model(void) {
    dd_conv2d_options co;
    dd_conv2d_options_init(&co);
    co.out_channels = 2;
    co.pad_h = co.pad_w = 1;
    dd_batchnorm_options bo;
    dd_batchnorm_options_init(&bo);
    dd_pool_options po;
    dd_pool_options_init(&po);
    return small_model(NULL, &co, &bo, &po);
}

static void fill_input(float *x, int32_t *y, int n) {
    for (int i = 0; i < n * 16; i++) x[i] = (float)((i * 37) % 17) / 17.0f;
    for (int i = 0; i < n; i++) y[i] = i % 3;
}

/* The model's options and the three layer options, each cut at its first
 * layout: the model builds (an over-read of fuse_layers or of a layer field
 * would read 0xA5A5... and be refused or change the shapes). */
START_TEST(model_and_layer_options_cut) {
    dd_model_options *mo = cut_struct(DD_MODEL_OPTIONS_SIZE_V1);
    dd_model_options_init_sized(mo, DD_MODEL_OPTIONS_SIZE_V1);
    ck_assert_uint_eq(size_of(mo), DD_MODEL_OPTIONS_SIZE_V1);
    ck_assert_int_eq(mo->num_threads, 0);
    ck_assert_int_eq(mo->conv_algo, DD_CONV_AUTO);
    mo->num_threads = 1;
    dd_conv2d_options *co = cut_struct(DD_CONV2D_OPTIONS_SIZE_V1);
    dd_conv2d_options_init_sized(co, DD_CONV2D_OPTIONS_SIZE_V1);
    co->out_channels = 2;
    co->pad_h = co->pad_w = 1;
    dd_batchnorm_options *bo = cut_struct(DD_BATCHNORM_OPTIONS_SIZE_V1);
    dd_batchnorm_options_init_sized(bo, DD_BATCHNORM_OPTIONS_SIZE_V1);
    dd_pool_options *po = cut_struct(DD_POOL_OPTIONS_SIZE_V1);
    dd_pool_options_init_sized(po, DD_POOL_OPTIONS_SIZE_V1);
    assert_guard(mo, DD_MODEL_OPTIONS_SIZE_V1);
    assert_guard(co, DD_CONV2D_OPTIONS_SIZE_V1);
    assert_guard(bo, DD_BATCHNORM_OPTIONS_SIZE_V1);
    assert_guard(po, DD_POOL_OPTIONS_SIZE_V1);

    dd_model *m = small_model(mo, co, bo, po);
    dd_node_info ni;
    ck_assert_int_eq(dd_model_node_info(m, 1, &ni), DD_OK);
    ck_assert_int_eq(ni.channels, 2);
    ck_assert_int_eq(ni.height, 4); /* 3x3, padding 1 */
    dd_model_destroy(m);
    free(mo);
    free(co);
    free(bo);
    free(po);
}
END_TEST

/* Outside [V1, sizeof]: refused by every consumer. */
START_TEST(sizes_outside_the_range_refused) {
    dd_model *m = NULL;
    dd_model_options mo;
    dd_model_options_init(&mo);
    mo.struct_size = DD_MODEL_OPTIONS_SIZE_V1 - 1;
    ck_assert_int_eq(dd_model_create(&m, 1, 4, 4, 3, &mo), DD_ERR_INVALID_ARGUMENT);
    ck_assert_ptr_null(m);
    ck_assert_ptr_nonnull(strstr(dd_last_error(), "struct_size"));
    mo.struct_size = sizeof mo + 8;
    ck_assert_int_eq(dd_model_create(&m, 1, 4, 4, 3, &mo), DD_ERR_INVALID_ARGUMENT);
    ck_assert_ptr_nonnull(strstr(dd_last_error(), "newer"));

    m = plain_model();
    dd_node_info ni;
    ck_assert_int_eq(dd_model_node_info_sized(m, 0, &ni, DD_NODE_INFO_SIZE_V1 - 1), DD_ERR_INVALID_ARGUMENT);
    ck_assert_int_eq(dd_model_node_info_sized(m, 0, &ni, sizeof ni + 1), DD_ERR_INVALID_ARGUMENT);
    dd_param_info pi;
    ck_assert_int_eq(dd_model_param_info_sized(m, 0, &pi, DD_PARAM_INFO_SIZE_V1 - 1),
                     DD_ERR_INVALID_ARGUMENT);
    dd_optimizer_options oo;
    dd_optimizer_options_init(&oo, DD_OPTIM_SGD);
    oo.struct_size = DD_OPTIMIZER_OPTIONS_SIZE_V1 - 1;
    dd_optimizer *opt = NULL;
    ck_assert_int_eq(dd_optimizer_create(&opt, m, &oo), DD_ERR_INVALID_ARGUMENT);
    dd_lr_schedule s;
    dd_lr_schedule_init(&s, DD_SCHED_COSINE, 0.1f, 10);
    s.struct_size = sizeof s + 8;
    float lr;
    ck_assert_int_eq(dd_lr_schedule_eval(&s, 0, &lr), DD_ERR_INVALID_ARGUMENT);
    dd_attack_options ao;
    dd_attack_options_init(&ao, DD_ATTACK_FGSM);
    ao.struct_size = 0;
    dd_attack *a = NULL;
    ck_assert_int_eq(dd_attack_create(&a, m, &ao), DD_ERR_INVALID_ARGUMENT);
    dd_step_stats st;
    dd_step_stats_init(&st);
    st.struct_size = DD_STEP_STATS_SIZE_V1 - 1;
    float x[4 * 16];
    int32_t y[4];
    fill_input(x, y, 4);
    ck_assert_int_eq(dd_model_forward(m, x, 4, DD_TRAIN, NULL), DD_OK);
    ck_assert_int_eq(dd_model_backward(m, y, &st), DD_ERR_INVALID_ARGUMENT);
    dd_model_destroy(m);
}
END_TEST

/* The info structs cut at their first layouts: filled up to their size
 * with what the full struct holds, nothing past it. */
START_TEST(info_structs_cut) {
    dd_model *m = plain_model();
    int nn = 0, np = 0;
    ck_assert_int_eq(dd_model_num_nodes(m, &nn), DD_OK);
    ck_assert_int_eq(dd_model_num_params(m, &np), DD_OK);
    for (int i = 0; i < nn; i++) {
        dd_node_info full, *cut = cut_struct(DD_NODE_INFO_SIZE_V1);
        ck_assert_int_eq(dd_model_node_info(m, i, &full), DD_OK);
        ck_assert_int_eq(dd_model_node_info_sized(m, i, cut, DD_NODE_INFO_SIZE_V1), DD_OK);
        assert_guard(cut, DD_NODE_INFO_SIZE_V1);
        ck_assert_uint_eq(cut->struct_size, DD_NODE_INFO_SIZE_V1);
        ck_assert_uint_eq(full.struct_size, sizeof full);
        ck_assert_int_eq(memcmp((char *)cut + sizeof(size_t), (char *)&full + sizeof(size_t),
                                DD_NODE_INFO_SIZE_V1 - sizeof(size_t)),
                         0);
        free(cut);
    }
    for (int i = 0; i < np; i++) {
        dd_param_info full, *cut = cut_struct(DD_PARAM_INFO_SIZE_V1);
        ck_assert_int_eq(dd_model_param_info(m, i, &full), DD_OK);
        ck_assert_int_eq(dd_model_param_info_sized(m, i, cut, DD_PARAM_INFO_SIZE_V1), DD_OK);
        assert_guard(cut, DD_PARAM_INFO_SIZE_V1);
        ck_assert_uint_eq(cut->struct_size, DD_PARAM_INFO_SIZE_V1);
        ck_assert_str_eq(cut->name, full.name);
        ck_assert_uint_eq(cut->count, full.count);
        ck_assert_int_eq(cut->trainable, full.trainable);
        free(cut);
    }
    dd_model_destroy(m);
}
END_TEST

/* Training with cut optimizer options, schedule and step statistics: the
 * same numbers as with full-size structs. */
START_TEST(training_structs_cut) {
    float x[4 * 16];
    int32_t y[4];
    fill_input(x, y, 4);
    double loss[2];
    float lr[2], w[2];
    for (int cut = 0; cut < 2; cut++) {
        dd_model *m = plain_model();
        dd_optimizer_options *oo = cut ? cut_struct(DD_OPTIMIZER_OPTIONS_SIZE_V1) : malloc(sizeof *oo);
        dd_optimizer_options_init_sized(oo, cut ? DD_OPTIMIZER_OPTIONS_SIZE_V1 : sizeof *oo, DD_OPTIM_SGD);
        dd_lr_schedule *s = cut ? cut_struct(DD_LR_SCHEDULE_SIZE_V1) : malloc(sizeof *s);
        dd_lr_schedule_init_sized(s, cut ? DD_LR_SCHEDULE_SIZE_V1 : sizeof *s, DD_SCHED_COSINE, 0.1f, 10);
        dd_step_stats *st = cut ? cut_struct(DD_STEP_STATS_SIZE_V1) : malloc(sizeof *st);
        dd_step_stats_init_sized(st, cut ? DD_STEP_STATS_SIZE_V1 : sizeof *st);
        dd_optimizer *opt = NULL;
        ck_assert_msg(dd_optimizer_create(&opt, m, oo) == DD_OK, "%s", dd_last_error());
        ck_assert_msg(dd_lr_schedule_eval(s, 3, &lr[cut]) == DD_OK, "%s", dd_last_error());
        ck_assert_int_eq(dd_model_forward(m, x, 4, DD_TRAIN, NULL), DD_OK);
        ck_assert_msg(dd_model_backward(m, y, st) == DD_OK, "%s", dd_last_error());
        ck_assert_int_eq(dd_optimizer_step(opt), DD_OK);
        loss[cut] = st->loss;
        ck_assert_int_eq(st->batch, 4);
        dd_param_info pi;
        ck_assert_int_eq(dd_model_param_info(m, 0, &pi), DD_OK);
        float *buf = malloc(pi.count * sizeof *buf);
        ck_assert_int_eq(dd_model_param_read(m, 0, buf, pi.count), DD_OK);
        w[cut] = buf[0];
        free(buf);
        if (cut) {
            assert_guard(oo, DD_OPTIMIZER_OPTIONS_SIZE_V1);
            assert_guard(s, DD_LR_SCHEDULE_SIZE_V1);
            assert_guard(st, DD_STEP_STATS_SIZE_V1);
        }
        dd_optimizer_destroy(opt);
        dd_model_destroy(m);
        free(oo);
        free(s);
        free(st);
    }
    ck_assert(loss[0] == loss[1]);
    ck_assert(lr[0] == lr[1]);
    ck_assert(w[0] == w[1]);
}
END_TEST

/* Attack options, its results and the options read back, cut. */
START_TEST(attack_structs_cut) {
    dd_model *m = plain_model();
    float x[4 * 16], adv[2][4 * 16];
    int32_t y[4];
    fill_input(x, y, 4);
    int succ[2];
    for (int cut = 0; cut < 2; cut++) {
        size_t os = cut ? DD_ATTACK_OPTIONS_SIZE_V1 : sizeof(dd_attack_options);
        size_t rs = cut ? DD_ATTACK_RESULTS_SIZE_V1 : sizeof(dd_attack_results);
        dd_attack_options *ao = cut_struct(os);
        dd_attack_options_init_sized(ao, os, DD_ATTACK_PGD_LINF);
        ao->steps = 3;
        dd_attack *a = NULL;
        ck_assert_msg(dd_attack_create(&a, m, ao) == DD_OK, "%s", dd_last_error());
        dd_attack_results *r = cut_struct(rs);
        dd_attack_results_init_sized(r, rs);
        int32_t pred[4];
        r->pred = pred;
        ck_assert_msg(dd_attack_run(a, x, y, 4, adv[cut], r) == DD_OK, "%s", dd_last_error());
        ck_assert_int_eq(r->n, 4);
        ck_assert_uint_eq(r->struct_size, rs);
        succ[cut] = r->num_success;
        dd_attack_options *back = cut_struct(os);
        ck_assert_int_eq(dd_attack_get_options_sized(a, back, os), DD_OK);
        ck_assert_int_eq(back->steps, 3);
        ck_assert_uint_eq(back->struct_size, os);
        assert_guard(ao, os);
        assert_guard(r, rs);
        assert_guard(back, os);
        dd_attack_destroy(a);
        free(ao);
        free(r);
        free(back);
    }
    ck_assert_int_eq(succ[0], succ[1]);
    ck_assert_int_eq(memcmp(adv[0], adv[1], sizeof adv[0]), 0);
    dd_model_destroy(m);
}
END_TEST

/* Batch-iterator options cut before the shard fields: one shard (every
 * sample once per epoch), as with the full struct's defaults; reading the
 * guard as num_shards would be refused. */
START_TEST(batch_iter_options_cut) {
    enum { N = 10 };
    float x[N * 16];
    int32_t y[N];
    fill_input(x, y, N);
    for (int i = 0; i < N; i++) y[i] = i; /* the sample's index */
    dd_dataset *ds = NULL;
    ck_assert_int_eq(dd_dataset_from_memory(&ds, x, y, N, 1, 4, 4, N), DD_OK);
    dd_batch_iter_options *o = cut_struct(DD_BATCH_ITER_OPTIONS_SIZE_V1);
    dd_batch_iter_options_init_sized(o, DD_BATCH_ITER_OPTIONS_SIZE_V1);
    assert_guard(o, DD_BATCH_ITER_OPTIONS_SIZE_V1);
    o->num_threads = 1;
    dd_batch_iter *it = NULL;
    ck_assert_msg(dd_batch_iter_create(&it, ds, 4, o) == DD_OK, "%s", dd_last_error());
    int seen[N] = {0}, got = 0, count = 0;
    float bx[4 * 16];
    int32_t by[4];
    while (dd_batch_iter_next(it, bx, by, NULL, &got) == DD_OK && got > 0) {
        for (int i = 0; i < got; i++) seen[by[i]]++;
        count += got;
    }
    ck_assert_int_eq(count, N);
    for (int i = 0; i < N; i++) ck_assert_int_eq(seen[i], 1);
    assert_guard(o, DD_BATCH_ITER_OPTIONS_SIZE_V1);
    dd_batch_iter_destroy(it);
    free(o);
    dd_dataset_destroy(ds);
}
END_TEST

/* An _init function given a size below its struct's first field, or NULL,
 * writes nothing. */
START_TEST(init_with_no_room_is_a_noop) {
    unsigned char b[sizeof(size_t) - 1];
    memset(b, 0xA5, sizeof b);
    dd_model_options_init_sized((dd_model_options *)(void *)b, sizeof b);
    dd_attack_options_init_sized((dd_attack_options *)(void *)b, sizeof b, DD_ATTACK_FGSM);
    for (size_t i = 0; i < sizeof b; i++) ck_assert_int_eq(b[i], 0xA5);
    dd_model_options_init_sized(NULL, sizeof(dd_model_options));
    dd_step_stats_init(NULL);
}
END_TEST

int main(void) {
    Suite *s = suite_create("abi");
    TCase *t = tcase_create("struct_size");
    tcase_add_test(t, model_and_layer_options_cut);
    tcase_add_test(t, sizes_outside_the_range_refused);
    tcase_add_test(t, info_structs_cut);
    tcase_add_test(t, training_structs_cut);
    tcase_add_test(t, attack_structs_cut);
    tcase_add_test(t, batch_iter_options_cut);
    tcase_add_test(t, init_with_no_room_is_a_noop);
    suite_add_tcase(s, t);
    SRunner *r = srunner_create(s);
    srunner_run_all(r, CK_NORMAL);
    int failed = srunner_ntests_failed(r);
    srunner_free(r);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
