/* examples/quickstart.c -- the smallest complete training loop.
 *
 *   quickstart [DATA_DIR|-] [OUT]
 *
 * Trains the zoo's small MLP with GFA regularisation for three epochs and
 * saves it to OUT (default quickstart.safetensors). DATA_DIR holds CIFAR-10
 * binary batches or IDX files (the first 10,000 training and 2,000 test
 * images are used); without it, or with "-", a synthetic dataset made in
 * memory. Every step is the four calls of the host loop in model.h:
 * zero_grad, forward, backward (cross-entropy + GFA), optimizer step.
 */
#include "common.h"

#define BATCH 64
#define EPOCHS 3

int main(int argc, char **argv) {
    const char *dir = argc > 1 && strcmp(argv[1], "-") != 0 ? argv[1] : NULL;
    const char *out = argc > 2 ? argv[2] : "quickstart.safetensors";

    /* Data: (N, C, H, W) images in [0, 1] and int32 labels. */
    dd_dataset *train, *test;
    if (dir != NULL) {
        train = open_dataset_or_die(dir, DD_SPLIT_TRAIN, 10000);
        test = open_dataset_or_die(dir, DD_SPLIT_TEST, 2000);
    } else {
        train = synthetic_dataset_or_die(2048, 1, 16, 16, 10, 1);
        test = synthetic_dataset_or_die(512, 1, 16, 16, 10, 2);
    }
    int c = 0, h = 0, w = 0, k = 0;
    check_or_die(dd_dataset_info(train, NULL, &c, &h, &w, &k), "dd_dataset_info");

    /* Model: normalize -> flatten -> linear 256 -> relu -> linear k, with
     * GFA hooks on the inputs of both linear layers. */
    dd_model *m = NULL;
    check_or_die(dd_zoo_create(&m, "mlp", c, h, w, k, 1, NULL, NULL, BATCH, NULL), "dd_zoo_create");
    check_or_die(dd_gfa_hook_defaults(m, 0.02f, DD_GFA_SIN2), "dd_gfa_hook_defaults");

    dd_optimizer_options oo;
    dd_optimizer_options_init(&oo, DD_OPTIM_ADAM);
    dd_optimizer *opt = NULL;
    check_or_die(dd_optimizer_create(&opt, m, &oo), "dd_optimizer_create");

    dd_batch_iter *it = NULL;
    check_or_die(dd_batch_iter_create(&it, train, BATCH, NULL), "dd_batch_iter_create");
    float *x = malloc_or_die((size_t)BATCH * c * h * w, sizeof *x); /* (BATCH, C, H, W) */
    int32_t *y = malloc_or_die(BATCH, sizeof *y);                   /* (BATCH) */

    for (int epoch = 0; epoch < EPOCHS; epoch++) {
        check_or_die(dd_batch_iter_reset(it, epoch), "dd_batch_iter_reset");
        double loss = 0.0, align = 0.0;
        long correct = 0, seen = 0;
        int n = 0;
        for (;;) {
            check_or_die(dd_batch_iter_next(it, x, y, NULL, &n), "dd_batch_iter_next");
            if (n == 0) break;
            dd_step_stats s;
            dd_step_stats_init(&s);
            check_or_die(dd_model_zero_grad(m), "dd_model_zero_grad");
            check_or_die(dd_model_forward(m, x, n, DD_TRAIN, NULL), "dd_model_forward");
            check_or_die(dd_model_backward(m, y, &s), "dd_model_backward");
            check_or_die(dd_optimizer_step(opt), "dd_optimizer_step");
            loss += s.loss * n;
            correct += s.correct;
            seen += n;
            for (int t = 0; t < s.num_hooks; t++) align += s.hook_align[t] * n / s.num_hooks;
        }
        printf("epoch %d: loss %.4f  train acc %.2f%%  GFA alignment %.3f  test acc %.2f%%\n", epoch + 1,
               loss / seen, 100.0 * correct / seen, align / seen, 100.0 * accuracy_or_die(m, test, 0));
    }
    check_or_die(dd_model_save(m, out), out);
    printf("saved %s\n", out);

    free(x);
    free(y);
    dd_batch_iter_destroy(it);
    dd_optimizer_destroy(opt);
    dd_model_destroy(m);
    dd_dataset_destroy(train);
    dd_dataset_destroy(test);
    return 0;
}
