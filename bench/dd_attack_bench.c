/* bench/dd_attack_bench.c -- images per second of every attack at its
 * default settings.
 *
 * Builds a preset (default cnn-cw, 3x32x32, 10 classes, CIFAR normalisation)
 * through dd_zoo_create, draws a fixed pseudo-random batch in [0, 1] and
 * labels it with the model's own predictions, so every sample starts
 * correctly classified: the attacks that skip clean mistakes (APGD, Square,
 * FAB, AutoAttack) then do their full work, which is what a robust model
 * makes them do. Each attack is created with dd_attack_options_init()
 * defaults, run once untimed (oneDNN creates its primitives for the batch
 * size on first use), then timed over --reps runs. One JSON line per
 * attack, in dd_bench's form:
 *   {"impl":"deepdefense","arch":"cnn-cw","attack":"pgd-linf","batch":128,"threads":2,"images_per_s":..}
 * --max-steps N caps the iteration count (and Square's queries) of every
 * attack and is reported in the line ("capped":true), for quick looks at
 * the expensive minimum-norm attacks (CW and EAD run 9 x 1000 steps).
 *
 * Usage: dd_attack_bench [--arch A] [--batch N] [--threads T] [--reps R]
 *                        [--attack NAME|all] [--max-steps N] [--seed S]
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <deepdefense/deepdefense.h>

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int fail(const char *what, dd_status s) {
    fprintf(stderr, "dd_attack_bench: %s: %s: %s\n", what, dd_status_string(s), dd_last_error());
    return 1;
}

int main(int argc, char **argv) {
    const char *arch = "cnn-cw", *only = "all";
    int batch = 128, threads = 2, reps = 1, max_steps = 0;
    unsigned long long seed = 1;
    for (int i = 1; i < argc; i++) {
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(argv[i], "--arch") && v)
            arch = argv[++i];
        else if (!strcmp(argv[i], "--batch") && v)
            batch = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--threads") && v)
            threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--reps") && v)
            reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--attack") && v)
            only = argv[++i];
        else if (!strcmp(argv[i], "--max-steps") && v)
            max_steps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--seed") && v)
            seed = strtoull(argv[++i], NULL, 10);
        else {
            fprintf(stderr,
                    "usage: %s [--arch A] [--batch N] [--threads T] [--reps R] [--attack NAME|all] "
                    "[--max-steps N] [--seed S]\n",
                    argv[0]);
            return 2;
        }
    }
    if (batch < 1 || threads < 1 || reps < 1 || max_steps < 0) {
        fprintf(stderr, "dd_attack_bench: batch, threads and reps must be >= 1\n");
        return 2;
    }
    const int C = 3, H = 32, W = 32, K = 10;
    dd_model_options mo;
    dd_model_options_init(&mo);
    mo.num_threads = threads;
    mo.seed = seed;
    dd_model *m = NULL;
    dd_status s = dd_zoo_create(&m, arch, C, H, W, K, 1, NULL, NULL, batch, &mo);
    if (s != DD_OK) return fail("dd_zoo_create", s);

    size_t d = (size_t)C * H * W;
    float *x = malloc((size_t)batch * d * sizeof(float));
    float *xadv = malloc((size_t)batch * d * sizeof(float));
    float *z = malloc((size_t)batch * K * sizeof(float));
    int32_t *y = malloc((size_t)batch * sizeof(int32_t));
    if (!x || !xadv || !z || !y) {
        fprintf(stderr, "dd_attack_bench: out of memory\n");
        return 1;
    }
    uint32_t st = (uint32_t)seed * 2654435761u + 1u;
    for (size_t j = 0; j < (size_t)batch * d; j++) {
        st = st * 1664525u + 1013904223u;
        x[j] = (float)((double)(st >> 8) / 16777216.0);
    }
    if ((s = dd_model_forward(m, x, batch, DD_EVAL, z)) != DD_OK) return fail("dd_model_forward", s);
    for (int i = 0; i < batch; i++) {
        int best = 0;
        for (int k = 1; k < K; k++)
            if (z[(size_t)i * K + k] > z[(size_t)i * K + best]) best = k;
        y[i] = best;
    }

    int status = 0;
    for (int kind = DD_ATTACK_FGSM; kind <= DD_ATTACK_TRADES_KL; kind++) {
        const char *name = dd_attack_kind_name((dd_attack_kind)kind);
        if (!name || (strcmp(only, "all") != 0 && strcmp(only, name) != 0)) continue;
        dd_attack_options o;
        dd_attack_options_init(&o, (dd_attack_kind)kind);
        int capped = 0;
        if (max_steps > 0 && o.steps > max_steps) {
            o.steps = max_steps;
            capped = 1;
        }
        if (max_steps > 0 && o.queries > max_steps) {
            o.queries = max_steps;
            capped = 1;
        }
        dd_attack *a = NULL;
        if ((s = dd_attack_create(&a, m, &o)) != DD_OK) {
            status = fail(name, s);
            continue;
        }
        dd_attack_results r;
        dd_attack_results_init(&r);
        if ((s = dd_attack_run(a, x, y, batch, xadv, &r)) != DD_OK) {
            status = fail(name, s);
            dd_attack_destroy(a);
            continue;
        }
        double t0 = now_s();
        for (int rep = 0; rep < reps && s == DD_OK; rep++) s = dd_attack_run(a, x, y, batch, xadv, &r);
        double dt = now_s() - t0;
        if (s != DD_OK) {
            status = fail(name, s);
        } else {
            printf("{\"impl\":\"deepdefense\",\"arch\":\"%s\",\"attack\":\"%s\",\"batch\":%d,\"threads\":%d,"
                   "\"images_per_s\":%.3f,\"seconds\":%.4f,\"reps\":%d,\"steps\":%d,\"queries\":%d,"
                   "\"capped\":%s,\"forward_passes\":%lld,\"gradient_passes\":%lld,\"robust\":%d}\n",
                   arch, name, batch, threads, (double)batch * reps / dt, dt / reps, reps, o.steps, o.queries,
                   capped ? "true" : "false", (long long)r.forward_passes, (long long)r.gradient_passes,
                   r.n - r.num_success);
            fflush(stdout);
        }
        dd_attack_destroy(a);
    }
    free(x);
    free(xadv);
    free(z);
    free(y);
    dd_model_destroy(m);
    return status;
}
