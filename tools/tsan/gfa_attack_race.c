/* tools/tsan/gfa_attack_race.c -- the GFA and attack passes at production
 * size under ThreadSanitizer (tools/run_tsan.sh builds and runs it).
 *
 * cnn-cw and resnet20 from the zoo, default options, 2 threads, batch 32
 * (large enough that every kernel of ours takes its threaded path: they go
 * single-threaded below 32768 floats), 32x32 inputs: one GFA step in
 * training and one in eval mode, an input gradient (the attack path) and a
 * PGD-3 attack. Exits 0 when every call succeeded; ThreadSanitizer itself
 * makes the process fail (exitcode 66) on a report.
 */
#include <stdio.h>
#include <stdlib.h>

#include <deepdefense/deepdefense.h>

#define CHECK(call)                                              \
    do {                                                         \
        dd_status s_ = (call);                                   \
        if (s_ != DD_OK) {                                       \
            fprintf(stderr, "%s: %s\n", #call, dd_last_error()); \
            exit(1);                                             \
        }                                                        \
    } while (0)

enum { B = 32, IN = 3 * 32 * 32, K = 10 };

static void run(const char *arch, const float *x, const int32_t *y, const float *dl, float *dx) {
    dd_model_options o;
    dd_model_options_init(&o);
    o.num_threads = 2;
    dd_model *m;
    CHECK(dd_zoo_create(&m, arch, 3, 32, 32, K, 1, NULL, NULL, B, &o));
    CHECK(dd_gfa_hook_defaults(m, 0.05f, DD_GFA_SIN2));
    dd_mode modes[2] = {DD_TRAIN, DD_EVAL};
    for (int k = 0; k < 2; k++) {
        CHECK(dd_model_zero_grad(m));
        CHECK(dd_model_forward(m, x, B, modes[k], NULL));
        CHECK(dd_model_backward(m, y, NULL));
    }
    CHECK(dd_model_forward(m, x, B, DD_EVAL, NULL));
    CHECK(dd_model_input_grad(m, dl, dx));
    dd_attack_options ao;
    dd_attack_options_init(&ao, DD_ATTACK_PGD_LINF);
    ao.steps = 3;
    dd_attack *a;
    CHECK(dd_attack_create(&a, m, &ao));
    float *adv = malloc((size_t)B * IN * sizeof(float));
    if (!adv) exit(1);
    CHECK(dd_attack_run(a, x, y, B, adv, NULL));
    free(adv);
    dd_attack_destroy(a);
    dd_model_destroy(m);
    printf("%s: GFA (train, eval), input gradient, PGD-3 ran\n", arch);
}

int main(void) {
    float *x = malloc((size_t)B * IN * sizeof(float)), *dx = malloc((size_t)B * IN * sizeof(float));
    float dl[B * K];
    int32_t y[B];
    if (!x || !dx) return 1;
    srand(7);
    for (size_t i = 0; i < (size_t)B * IN; i++) x[i] = (float)rand() / (float)RAND_MAX;
    for (int i = 0; i < B; i++) y[i] = i % K;
    for (int i = 0; i < B * K; i++) dl[i] = (float)rand() / (float)RAND_MAX - 0.5f;
    run("cnn-cw", x, y, dl, dx);
    run("resnet20", x, y, dl, dx);
    free(x);
    free(dx);
    return 0;
}
