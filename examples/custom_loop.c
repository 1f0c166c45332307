/* examples/custom_loop.c -- the host drives PGD adversarial training and GFA
 * by hand.
 *
 *   custom_loop [--data DIR] [--epochs N] [--limit N] [--threads N] [--out PATH]
 *
 * Everything the train_cifar example gets from helpers is spelled out here:
 * a small CNN built node by node (normalize, conv-BN-ReLU-pool twice, two
 * linear layers), GFA hooks placed on chosen tensors with their own lambdas,
 * a cosine learning-rate schedule evaluated per step, and each step written
 * as the host loop of DESIGN.md:
 *
 *     x_adv = PGD(x)                       dd_attack_run (DD_EVAL passes)
 *     dd_model_zero_grad
 *     dd_model_forward(x_adv, DD_TRAIN)
 *     dd_model_backward(labels)            cross-entropy + GFA, exact gradient
 *     dd_optimizer_step
 *
 * Data: DIR with CIFAR-10 binary or IDX files (first --limit training
 * images, default 2,000), else a synthetic dataset made in memory. After
 * each epoch it prints the alignment |cos(gradient, feature)| of every hook;
 * at the end, clean and PGD-10 accuracy on the test images.
 */
#include "common.h"

#define BATCH 32

/* Appends conv3x3(pad 1) -> batchnorm -> relu -> maxpool2 to `in`. */
static dd_node conv_block_or_die(dd_model *m, dd_node in, int channels, const char *name) {
    char buf[64];
    dd_conv2d_options co;
    dd_conv2d_options_init(&co);
    co.out_channels = channels;
    co.pad_h = co.pad_w = 1;
    co.bias = 0; /* batch norm follows */
    snprintf(buf, sizeof buf, "%s.conv", name);
    co.name = buf;
    dd_node conv, bn, act, pool;
    check_or_die(dd_model_add_conv2d(m, in, &co, &conv), "dd_model_add_conv2d");
    dd_batchnorm_options bo;
    dd_batchnorm_options_init(&bo);
    snprintf(buf, sizeof buf, "%s.bn", name);
    bo.name = buf;
    check_or_die(dd_model_add_batchnorm(m, conv, &bo, &bn), "dd_model_add_batchnorm");
    check_or_die(dd_model_add_relu(m, bn, NULL, &act), "dd_model_add_relu");
    dd_pool_options po;
    dd_pool_options_init(&po);
    check_or_die(dd_model_add_maxpool(m, act, &po, &pool), "dd_model_add_maxpool");
    return pool;
}

int main(int argc, char **argv) {
    const char *dir = NULL, *out = "custom_loop.safetensors";
    int epochs = 2, threads = 0;
    long limit = 2000;
    for (int i = 1; i < argc; i += 2) {
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (v == NULL) die("%s needs a value (options: --data --epochs --limit --threads --out)", argv[i]);
        if (strcmp(argv[i], "--data") == 0)
            dir = v;
        else if (strcmp(argv[i], "--epochs") == 0)
            epochs = (int)parse_long_or_die("--epochs", v, 1, 1000);
        else if (strcmp(argv[i], "--limit") == 0)
            limit = parse_long_or_die("--limit", v, 1, 1L << 30);
        else if (strcmp(argv[i], "--threads") == 0)
            threads = (int)parse_long_or_die("--threads", v, 0, 1024);
        else if (strcmp(argv[i], "--out") == 0)
            out = v;
        else
            die("unknown option '%s'", argv[i]);
    }

    dd_dataset *train, *test;
    if (dir != NULL) {
        train = open_dataset_or_die(dir, DD_SPLIT_TRAIN, limit);
        test = open_dataset_or_die(dir, DD_SPLIT_TEST, limit / 4 > 0 ? limit / 4 : 1);
    } else {
        train = synthetic_dataset_or_die((int)limit, 3, 16, 16, 10, 11);
        test = synthetic_dataset_or_die((int)(limit / 4 > 0 ? limit / 4 : 1), 3, 16, 16, 10, 12);
    }
    int ntrain = 0, c = 0, h = 0, w = 0, k = 0;
    check_or_die(dd_dataset_info(train, &ntrain, &c, &h, &w, &k), "dd_dataset_info");

    /* ---- the model, node by node ---- */
    dd_model_options mo;
    dd_model_options_init(&mo);
    mo.num_threads = threads;
    dd_model *m = NULL;
    check_or_die(dd_model_create(&m, c, h, w, k, &mo), "dd_model_create");
    float mean[3] = {0.5f, 0.5f, 0.5f}, std[3] = {0.25f, 0.25f, 0.25f};
    if (c > 3) die("this example normalises at most 3 channels");
    dd_node x0, b1, b2, flat, fc1, act, logits;
    check_or_die(dd_model_add_normalize(m, DD_INPUT, mean, std, c, "norm", &x0), "dd_model_add_normalize");
    b1 = conv_block_or_die(m, x0, 16, "block1");
    b2 = conv_block_or_die(m, b1, 32, "block2");
    check_or_die(dd_model_add_flatten(m, b2, NULL, &flat), "dd_model_add_flatten");
    check_or_die(dd_model_add_linear(m, flat, 64, 1, "fc1", &fc1), "dd_model_add_linear");
    check_or_die(dd_model_add_relu(m, fc1, NULL, &act), "dd_model_add_relu");
    check_or_die(dd_model_add_linear(m, act, k, 1, "fc2", &logits), "dd_model_add_linear");
    check_or_die(dd_model_build(m, logits, BATCH), "dd_model_build");

    /* ---- GFA on two chosen tensors, each with its own weight ---- */
    check_or_die(dd_gfa_hook(m, b1, 0.05f), "dd_gfa_hook(block1)");
    check_or_die(dd_gfa_hook(m, flat, 0.02f), "dd_gfa_hook(flatten)");
    check_or_die(dd_gfa_set_mode(m, DD_GFA_SIN2), "dd_gfa_set_mode");

    /* ---- optimizer, schedule, the PGD attack that makes x_adv ---- */
    dd_optimizer_options oo;
    dd_optimizer_options_init(&oo, DD_OPTIM_SGD);
    oo.lr = 0.05f;
    dd_optimizer *opt = NULL;
    check_or_die(dd_optimizer_create(&opt, m, &oo), "dd_optimizer_create");
    dd_batch_iter_options io;
    dd_batch_iter_options_init(&io);
    io.drop_last = ntrain >= BATCH;
    io.num_threads = threads;
    dd_batch_iter *it = NULL;
    check_or_die(dd_batch_iter_create(&it, train, BATCH, &io), "dd_batch_iter_create");
    int nb = 0;
    check_or_die(dd_batch_iter_info(it, &nb, NULL), "dd_batch_iter_info");
    dd_lr_schedule sched;
    dd_lr_schedule_init(&sched, DD_SCHED_COSINE, oo.lr, (int64_t)epochs * nb);

    dd_attack_options ao;
    dd_attack_options_init(&ao, DD_ATTACK_PGD_LINF);
    ao.eps = 4.0f / 255.0f; /* a gentle budget for a two-epoch run */
    ao.steps = 5;
    ao.step_size = 2.5f * ao.eps / (float)ao.steps;
    dd_attack *pgd = NULL;
    check_or_die(dd_attack_create(&pgd, m, &ao), "dd_attack_create");

    size_t per = (size_t)c * h * w;
    float *x = malloc_or_die(BATCH * per, sizeof *x);         /* (BATCH, C, H, W) */
    float *x_adv = malloc_or_die(BATCH * per, sizeof *x_adv); /* (BATCH, C, H, W) */
    int32_t *y = malloc_or_die(BATCH, sizeof *y);

    int64_t step = 0;
    for (int epoch = 0; epoch < epochs; epoch++) {
        check_or_die(dd_batch_iter_reset(it, epoch), "dd_batch_iter_reset");
        double loss = 0.0, align[DD_MAX_HOOKS] = {0};
        long correct = 0, seen = 0;
        int hooks = 0, n = 0;
        for (;;) {
            check_or_die(dd_batch_iter_next(it, x, y, NULL, &n), "dd_batch_iter_next");
            if (n == 0) break;
            float lr;
            check_or_die(dd_lr_schedule_eval(&sched, step++, &lr), "dd_lr_schedule_eval");
            check_or_die(dd_optimizer_set_lr(opt, lr), "dd_optimizer_set_lr");

            check_or_die(dd_attack_run(pgd, x, y, n, x_adv, NULL), "dd_attack_run");
            dd_step_stats s;
            dd_step_stats_init(&s);
            check_or_die(dd_model_zero_grad(m), "dd_model_zero_grad");
            check_or_die(dd_model_forward(m, x_adv, n, DD_TRAIN, NULL), "dd_model_forward");
            check_or_die(dd_model_backward(m, y, &s), "dd_model_backward");
            check_or_die(dd_optimizer_step(opt), "dd_optimizer_step");

            loss += s.loss * n;
            correct += s.correct;
            seen += n;
            hooks = s.num_hooks;
            for (int t = 0; t < s.num_hooks; t++) align[t] += s.hook_align[t] * n;
        }
        printf("epoch %d: adversarial loss %.4f, adversarial acc %.2f%%, alignment", epoch + 1, loss / seen,
               100.0 * correct / seen);
        for (int t = 0; t < hooks; t++) {
            dd_node node;
            float lambda;
            check_or_die(dd_gfa_get_hook(m, t, &node, &lambda), "dd_gfa_get_hook");
            dd_node_info info;
            check_or_die(dd_model_node_info(m, node, &info), "dd_model_node_info");
            printf(" %s(lambda %g) %.3f", info.name, (double)lambda, align[t] / seen);
        }
        printf("\n");
    }

    printf("test: clean %.2f%%, PGD-10 at eps 4/255 %.2f%%\n", 100.0 * accuracy_or_die(m, test, 0),
           100.0 * robust_accuracy_or_die(m, test, 0, DD_ATTACK_PGD_LINF, 4.0f / 255.0f));
    check_or_die(dd_model_save(m, out), out);
    printf("saved %s\n", out);

    free(x);
    free(x_adv);
    free(y);
    dd_attack_destroy(pgd);
    dd_batch_iter_destroy(it);
    dd_optimizer_destroy(opt);
    dd_model_destroy(m);
    dd_dataset_destroy(train);
    dd_dataset_destroy(test);
    return 0;
}
