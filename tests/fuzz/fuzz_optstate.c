/* tests/fuzz/fuzz_optstate.c -- libFuzzer target for the optimizer state
 * (the blob of dd_optimizer_state_read, which train_cifar's "<out>.state"
 * sidecar carries after its text lines), on its own.
 *
 * The first input byte picks one of four optimizers on one small built
 * model (SGD with momentum, SGD with Nesterov, Adam, AdamW; created once),
 * the rest is the state given to dd_optimizer_state_write. Whatever the
 * bytes, the call must return DD_OK, DD_ERR_FORMAT or DD_ERR_NUMERIC
 * without crashing or reading out of bounds, and change nothing unless it
 * returns DD_OK (optim.h: everything is checked first): the state read
 * back equals the state before the call. On DD_OK the state read back must
 * be the input, byte for byte, and a step must run (DD_ERR_NUMERIC allowed:
 * finite moments can still overflow). Seeds: tests/fuzz/corpus/optstate,
 * the states of each optimizer after a few steps (tests/fuzz/make_seeds.c).
 *
 * Run: ./fuzz_optstate -max_total_time=60 CORPUS_DIR tests/fuzz/corpus/optstate
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <deepdefense/model.h>
#include <deepdefense/optim.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The model of every run: input 1x4x4 -> conv 2 -> relu -> flatten ->
 * linear 3 (a conv weight, a linear weight and both biases), one thread. */
static dd_model *fuzz_os_model(void) {
    dd_model_options mo;
    dd_model_options_init(&mo);
    mo.num_threads = 1;
    dd_model *m = NULL;
    dd_conv2d_options co;
    dd_conv2d_options_init(&co);
    co.out_channels = 2;
    dd_node c, r, f, l;
    if (dd_model_create(&m, 1, 4, 4, 3, &mo) != DD_OK || dd_model_add_conv2d(m, DD_INPUT, &co, &c) != DD_OK ||
        dd_model_add_relu(m, c, NULL, &r) != DD_OK || dd_model_add_flatten(m, r, NULL, &f) != DD_OK ||
        dd_model_add_linear(m, f, 3, 1, NULL, &l) != DD_OK || dd_model_build(m, l, 2) != DD_OK)
        abort();
    return m;
}

/* The optimizer of kind k (0 SGD, 1 SGD Nesterov, 2 Adam, 3 AdamW) on m. */
static dd_optimizer *fuzz_os_optimizer(dd_model *m, int k) {
    dd_optimizer_options oo;
    dd_optimizer_options_init(&oo, k < 2 ? DD_OPTIM_SGD : k == 2 ? DD_OPTIM_ADAM : DD_OPTIM_ADAMW);
    oo.nesterov = k == 1;
    dd_optimizer *opt = NULL;
    if (dd_optimizer_create(&opt, m, &oo) != DD_OK) abort();
    return opt;
}

/* The state of opt, malloc'ed (*bytes long). */
static unsigned char *fuzz_os_state(const dd_optimizer *opt, size_t *bytes) {
    if (dd_optimizer_state_size(opt, bytes) != DD_OK) abort();
    unsigned char *b = malloc(*bytes ? *bytes : 1);
    if (b == NULL || dd_optimizer_state_read(opt, b, *bytes) != DD_OK) abort();
    return b;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static dd_model *m;
    static dd_optimizer *opts[4];
    if (m == NULL) {
        m = fuzz_os_model();
        for (int k = 0; k < 4; k++) opts[k] = fuzz_os_optimizer(m, k);
    }
    if (size < 1) return 0;
    dd_optimizer *opt = opts[data[0] % 4];
    size_t before_n;
    unsigned char *before = fuzz_os_state(opt, &before_n);
    dd_status s = dd_optimizer_state_write(opt, data + 1, size - 1);
    size_t after_n;
    unsigned char *after = fuzz_os_state(opt, &after_n);
    if (s == DD_OK) {
        if (after_n != size - 1 || memcmp(after, data + 1, after_n) != 0) abort(); /* not restored */
        if (dd_model_zero_grad(m) != DD_OK) abort();
        s = dd_optimizer_step(opt);
        if (s != DD_OK && s != DD_ERR_NUMERIC) abort();
    } else {
        if (s != DD_ERR_FORMAT && s != DD_ERR_NUMERIC) abort();
        if (after_n != before_n || memcmp(after, before, before_n) != 0) abort(); /* changed on failure */
    }
    free(before);
    free(after);
    return 0;
}
