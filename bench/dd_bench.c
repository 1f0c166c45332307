/* bench/dd_bench.c -- training and inference throughput of libdeepdefense.
 *
 * Builds a zoo preset (3x32x32 CIFAR shape, normalize node, 10 classes),
 * feeds it one synthetic batch (pixels uniform in [0,1), labels i % 10) and
 * times whole steps with clock_gettime(CLOCK_MONOTONIC): the median over
 * --steps timed steps after --warmup untimed ones (first use of a batch size
 * creates primitives and faults pages in). Modes: plain (zero_grad,
 * forward DD_TRAIN, backward, SGD step), infer (dd_model_predict, or with
 * --predict 0 dd_model_forward in DD_EVAL), gfa (plain
 * with dd_gfa_hook_defaults), pgd-at (PGD-10 Linf through dd_attack_run,
 * then a plain step on x_adv). gfa and pgd-at time a plain step first in the
 * same process and report their cost ratio to it.
 *
 * Honesty checks for a shared machine (shared/ONEDNN.md section 4): a step
 * whose process CPU time is below 0.9 * threads * wall time is counted as
 * "disturbed" (a thread was descheduled; serial host code also lowers the
 * ratio, see "cpu_util"). primitive_ms is the time inside oneDNN
 * (dd_model_primitive_seconds, reset every step). peak_gflops is the best
 * of 5 dnnl_sgemm runs at M=N=K=1024; dnnl_sgemm uses omp_get_max_threads(),
 * so run with OMP_NUM_THREADS=threads (the model's own count is
 * dd_model_options.num_threads; this program never sets OpenMP's ICVs).
 * Output: one JSON line per measurement on stdout; diagnostics on stderr.
 */
#define _POSIX_C_SOURCE 200809L /* clock_gettime, getrusage */

#include <deepdefense/deepdefense.h>
#include <deepdefense/attack.h>
#include <deepdefense/gfa.h>
#include <deepdefense/optim.h>
#include <deepdefense/zoo.h>
#include <dnnl.h>
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#define NUM_CLASSES 10
#define IMG_C 3
#define IMG_H 32
#define IMG_W 32

typedef struct {
    const char *arch, *mode;
    int batch, steps, warmup, threads;
    float gfa_lambda;
    uint64_t seed;
    int fuse;      /* dd_model_options.fuse_layers */
    int conv_algo; /* dd_model_options.conv_algo */
    int predict;   /* infer through dd_model_predict (else dd_model_forward) */
} config;

/* Model FLOPs per step, counted from the architecture: 2 * MACs of every
 * conv2d and linear node (batch norm, ReLU, pooling, adds, the loss and the
 * optimizer are not counted). fwd: all forward passes; bwd_data: the layers
 * whose input needs a gradient (not the first conv, whose input is the image
 * or the normalised image: no parameter upstream). */
typedef struct {
    double fwd, bwd_data;
} flops;

/* One measured series. */
typedef struct {
    double ms_median, ms_min, prim_ms_median, cpu_util_median, ms_undisturbed;
    int disturbed;
} timing;

/* What a step callback needs. */
typedef struct {
    const config *cfg;
    dd_model *m;
    dd_optimizer *opt;
    dd_attack *atk;
    const float *x;
    float *x_adv, *logits;
    const int32_t *y;
} ctx;

typedef dd_status (*step_fn)(ctx *c);

static double now(clockid_t id) {
    struct timespec ts;
    clock_gettime(id, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static uint64_t splitmix64(uint64_t *s) {
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Median of v[0..n), n >= 1; sorts v. */
static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static double peak_rss_mb(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_maxrss / 1024.0; /* Linux: kilobytes */
}

static void fail(const config *cfg, const char *mode, const char *what, dd_status s) {
    fprintf(stderr, "dd_bench: %s: %s: %s (%s)\n", mode, what, dd_status_string(s), dd_last_error());
    printf("{\"impl\":\"deepdefense\",\"arch\":\"%s\",\"mode\":\"%s\",\"error\":\"%s: %s\"}\n", cfg->arch,
           mode, what, dd_status_string(s));
    fflush(stdout);
}

/* Best GFLOP/s of 5 row-major dnnl_sgemm runs at M=N=K=1024 (after one warm-up). */
static double sgemm_peak(uint64_t seed) {
    const dnnl_dim_t n = 1024;
    float *a = malloc((size_t)(n * n) * sizeof(float));
    float *b = malloc((size_t)(n * n) * sizeof(float));
    float *c = malloc((size_t)(n * n) * sizeof(float));
    double best = 0.0;
    if (a && b && c) {
        uint64_t s = seed ^ 0x5eedull;
        for (dnnl_dim_t i = 0; i < n * n; i++) {
            a[i] = (float)(splitmix64(&s) >> 40) * 0x1p-24f - 0.5f;
            b[i] = (float)(splitmix64(&s) >> 40) * 0x1p-24f - 0.5f;
        }
        for (int r = 0; r < 6; r++) {
            double t0 = now(CLOCK_MONOTONIC);
            if (dnnl_sgemm('N', 'N', n, n, n, 1.0f, a, n, b, n, 0.0f, c, n) != dnnl_success) break;
            double t = now(CLOCK_MONOTONIC) - t0;
            double gf = 2.0 * (double)n * (double)n * (double)n / t * 1e-9;
            if (r > 0 && gf > best) best = gf;
        }
    }
    free(a);
    free(b);
    free(c);
    return best;
}

static flops count_flops(dd_model *m, int batch) {
    flops f = {0.0, 0.0};
    int nn = 0;
    if (dd_model_num_nodes(m, &nn) != DD_OK || nn < 1) return f;
    /* upstream[i]: node i's output depends on a trainable parameter. */
    char *upstream = calloc((size_t)nn, 1);
    if (!upstream) return f;
    for (dd_node i = 0; i < nn; i++) {
        dd_node_info info, in;
        if (dd_model_node_info(m, i, &info) != DD_OK) continue;
        int param =
            info.type == DD_NODE_CONV2D || info.type == DD_NODE_LINEAR || info.type == DD_NODE_BATCHNORM;
        for (int k = 0; k < info.num_inputs; k++) param |= upstream[info.inputs[k]];
        upstream[i] = (char)param;
        if (info.type != DD_NODE_CONV2D && info.type != DD_NODE_LINEAR) continue;
        if (dd_model_node_info(m, info.inputs[0], &in) != DD_OK) continue;
        double in_feat = (double)in.channels * in.height * in.width;
        double macs = info.type == DD_NODE_CONV2D ? (double)info.channels * info.height * info.width *
                                                        in.channels * info.kernel_h * info.kernel_w
                                                  : (double)info.channels * in_feat;
        double fl = 2.0 * batch * macs;
        f.fwd += fl;
        if (upstream[info.inputs[0]]) f.bwd_data += fl;
    }
    free(upstream);
    return f;
}

/* ---- steps ---------------------------------------------------------------- */

static dd_status train_on(ctx *c, const float *x) {
    dd_status s = dd_model_zero_grad(c->m);
    if (s == DD_OK) s = dd_model_forward(c->m, x, c->cfg->batch, DD_TRAIN, NULL);
    if (s == DD_OK) s = dd_model_backward(c->m, c->y, NULL);
    if (s == DD_OK) s = dd_optimizer_step(c->opt);
    return s;
}

static dd_status step_plain(ctx *c) { return train_on(c, c->x); }

static dd_status step_infer(ctx *c) {
    if (c->cfg->predict) return dd_model_predict(c->m, c->x, c->cfg->batch, c->logits);
    return dd_model_forward(c->m, c->x, c->cfg->batch, DD_EVAL, c->logits);
}

static dd_status step_pgd_at(ctx *c) {
    dd_status s = dd_attack_run(c->atk, c->x, c->y, c->cfg->batch, c->x_adv, NULL);
    return s == DD_OK ? train_on(c, c->x_adv) : s;
}

/* Runs warmup + steps calls of fn; fills *t. Returns the first error. */
static dd_status measure(ctx *c, step_fn fn, timing *t) {
    const config *cfg = c->cfg;
    int n = cfg->steps;
    double *wall = calloc((size_t)n, sizeof(double)), *prim = calloc((size_t)n, sizeof(double));
    double *util = calloc((size_t)n, sizeof(double)), *good = calloc((size_t)n, sizeof(double));
    dd_status s = (wall && prim && util && good) ? DD_OK : DD_ERR_OUT_OF_MEMORY;
    int ngood = 0;
    memset(t, 0, sizeof *t);
    for (int i = 0; s == DD_OK && i < cfg->warmup + n; i++) {
        double ps;
        dd_model_primitive_seconds(c->m, &ps, 1);
        double c0 = now(CLOCK_PROCESS_CPUTIME_ID), t0 = now(CLOCK_MONOTONIC);
        s = fn(c);
        double t1 = now(CLOCK_MONOTONIC), c1 = now(CLOCK_PROCESS_CPUTIME_ID);
        dd_model_primitive_seconds(c->m, &ps, 1);
        if (s != DD_OK || i < cfg->warmup) continue;
        int k = i - cfg->warmup;
        wall[k] = t1 - t0;
        prim[k] = ps;
        util[k] = (c1 - c0) / (cfg->threads * (t1 - t0));
        if (util[k] >= 0.9)
            good[ngood++] = wall[k];
        else
            t->disturbed++;
    }
    if (s == DD_OK) {
        t->ms_median = 1e3 * median(wall, n);
        t->ms_min = 1e3 * wall[0]; /* sorted by median() */
        t->prim_ms_median = 1e3 * median(prim, n);
        t->cpu_util_median = median(util, n);
        t->ms_undisturbed = ngood ? 1e3 * median(good, ngood) : NAN;
    }
    free(wall);
    free(prim);
    free(util);
    free(good);
    return s;
}

/* Prints a JSON number, or null when not finite. */
static void jnum(const char *key, double v) {
    if (isfinite(v))
        printf(",\"%s\":%.6g", key, v);
    else
        printf(",\"%s\":null", key);
}

static void report(const config *cfg, const char *mode, const timing *t, double peak, double gflop,
                   dd_model *m, const char *extra_fmt_json) {
    size_t model_bytes = 0;
    dd_model_memory_size(m, &model_bytes);
    printf("{\"impl\":\"deepdefense\",\"arch\":\"%s\",\"mode\":\"%s\",\"batch\":%d,\"threads\":%d", cfg->arch,
           mode, cfg->batch, cfg->threads);
    jnum("images_per_s", cfg->batch / (t->ms_median * 1e-3));
    jnum("ms_per_step", t->ms_median);
    jnum("ms_min", t->ms_min);
    jnum("ms_undisturbed", t->ms_undisturbed);
    jnum("primitive_ms", t->prim_ms_median);
    jnum("outside_frac", 1.0 - t->prim_ms_median / t->ms_median);
    jnum("peak_gflops", peak);
    printf(",\"sgemm_threads\":%d", omp_get_max_threads());
    jnum("gflop_per_step", gflop);
    jnum("efficiency", peak > 0 ? gflop / (t->ms_median * 1e-3) / peak : NAN);
    printf(",\"steps\":%d,\"disturbed\":%d", cfg->steps, t->disturbed);
    jnum("cpu_util", t->cpu_util_median);
    jnum("peak_rss_mb", peak_rss_mb());
    jnum("model_mb", (double)model_bytes / (1024.0 * 1024.0));
    printf("%s}\n", extra_fmt_json ? extra_fmt_json : "");
    fflush(stdout);
}

static void usage(void) {
    fprintf(stderr, "usage: dd_bench [--arch cnn-cw|resnet20|preact-resnet18] [--batch 128] [--steps 20]\n"
                    "                [--warmup 3] [--threads 2] [--mode plain|infer|gfa|pgd-at|all]\n"
                    "                [--gfa-lambda 0.1] [--seed 1] [--fuse 1|0] [--predict 1|0]\n"
                    "                [--conv-algo auto|direct|winograd]\n"
                    "Run with OMP_NUM_THREADS=<threads> so that the sgemm peak uses the same threads.\n");
}

static int parse(int argc, char **argv, config *cfg) {
    cfg->arch = "cnn-cw";
    cfg->mode = "all";
    cfg->batch = 128;
    cfg->steps = 20;
    cfg->warmup = 3;
    cfg->threads = 2;
    cfg->gfa_lambda = 0.1f;
    cfg->seed = 1;
    cfg->fuse = 1;
    cfg->predict = 1;
    cfg->conv_algo = DD_CONV_AUTO;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) return 1;
        if (!v) return -1;
        i++;
        if (strcmp(a, "--arch") == 0)
            cfg->arch = v;
        else if (strcmp(a, "--mode") == 0)
            cfg->mode = v;
        else if (strcmp(a, "--batch") == 0)
            cfg->batch = atoi(v);
        else if (strcmp(a, "--steps") == 0)
            cfg->steps = atoi(v);
        else if (strcmp(a, "--warmup") == 0)
            cfg->warmup = atoi(v);
        else if (strcmp(a, "--threads") == 0)
            cfg->threads = atoi(v);
        else if (strcmp(a, "--gfa-lambda") == 0)
            cfg->gfa_lambda = strtof(v, NULL);
        else if (strcmp(a, "--seed") == 0)
            cfg->seed = strtoull(v, NULL, 10);
        else if (strcmp(a, "--fuse") == 0)
            cfg->fuse = atoi(v);
        else if (strcmp(a, "--predict") == 0)
            cfg->predict = atoi(v);
        else if (strcmp(a, "--conv-algo") == 0)
            cfg->conv_algo = strcmp(v, "auto") == 0       ? DD_CONV_AUTO
                             : strcmp(v, "direct") == 0   ? DD_CONV_DIRECT
                             : strcmp(v, "winograd") == 0 ? DD_CONV_WINOGRAD
                                                          : -1;
        else
            return -1;
    }
    if (cfg->batch < 1 || cfg->steps < 1 || cfg->warmup < 0 || cfg->threads < 1 || !(cfg->gfa_lambda >= 0) ||
        (cfg->fuse != 0 && cfg->fuse != 1) || (cfg->predict != 0 && cfg->predict != 1) || cfg->conv_algo < 0)
        return -1;
    const char *modes[] = {"plain", "infer", "gfa", "pgd-at", "all"};
    for (size_t k = 0; k < sizeof modes / sizeof *modes; k++)
        if (strcmp(cfg->mode, modes[k]) == 0) return 0;
    return -1;
}

int main(int argc, char **argv) {
    config cfg;
    int pr = parse(argc, argv, &cfg);
    if (pr != 0) {
        usage();
        return pr > 0 ? 0 : 2;
    }
    const int all = strcmp(cfg.mode, "all") == 0;
    const int want_infer = all || strcmp(cfg.mode, "infer") == 0;
    const int want_gfa = all || strcmp(cfg.mode, "gfa") == 0;
    const int want_pgd = all || strcmp(cfg.mode, "pgd-at") == 0;
    const int want_plain = all || want_gfa || want_pgd || strcmp(cfg.mode, "plain") == 0;

    if (omp_get_max_threads() != cfg.threads)
        fprintf(stderr,
                "dd_bench: warning: omp_get_max_threads() = %d but --threads %d: the sgemm peak "
                "uses %d threads (set OMP_NUM_THREADS=%d)\n",
                omp_get_max_threads(), cfg.threads, omp_get_max_threads(), cfg.threads);
    double peak = sgemm_peak(cfg.seed);

    const size_t d = (size_t)IMG_C * IMG_H * IMG_W, count = (size_t)cfg.batch * d;
    float *x = malloc(count * sizeof(float)), *x_adv = malloc(count * sizeof(float));
    float *logits = malloc((size_t)cfg.batch * NUM_CLASSES * sizeof(float));
    int32_t *y = malloc((size_t)cfg.batch * sizeof(int32_t));
    if (!x || !x_adv || !logits || !y) {
        fprintf(stderr, "dd_bench: out of memory\n");
        return 1;
    }
    uint64_t rs = cfg.seed;
    for (size_t j = 0; j < count; j++) x[j] = (float)(splitmix64(&rs) >> 40) * 0x1p-24f;
    for (int i = 0; i < cfg.batch; i++) y[i] = i % NUM_CLASSES;

    dd_model_options mo;
    dd_model_options_init(&mo);
    mo.num_threads = cfg.threads;
    mo.seed = cfg.seed;
    mo.fuse_layers = cfg.fuse;
    mo.conv_algo = (dd_conv_algo)cfg.conv_algo;
    dd_model *m = NULL;
    dd_status s =
        dd_zoo_create(&m, cfg.arch, IMG_C, IMG_H, IMG_W, NUM_CLASSES, 1, NULL, NULL, cfg.batch, &mo);
    if (s != DD_OK) {
        fail(&cfg, cfg.mode, "dd_zoo_create", s);
        return 1;
    }
    dd_optimizer_options oo;
    dd_optimizer_options_init(&oo, DD_OPTIM_SGD);
    oo.lr = 0.01f; /* small: random labels must not drive the weights to overflow */
    dd_optimizer *opt = NULL;
    s = dd_optimizer_create(&opt, m, &oo);
    if (s != DD_OK) {
        fail(&cfg, cfg.mode, "dd_optimizer_create", s);
        dd_model_destroy(m);
        return 1;
    }

    flops f = count_flops(m, cfg.batch);
    const double plain_gflop = 1e-9 * (2.0 * f.fwd + f.bwd_data);
    ctx c = {&cfg, m, opt, NULL, x, x_adv, logits, y};
    timing tp, t;
    int rc = 0;
    char extra[256];

    if (want_plain) {
        s = measure(&c, step_plain, &tp);
        if (s != DD_OK) {
            fail(&cfg, "plain", "step", s);
            rc = 1;
            goto done;
        }
        report(&cfg, "plain", &tp, peak, plain_gflop, m, NULL);
    }
    if (want_infer) {
        s = measure(&c, step_infer, &t);
        if (s != DD_OK) {
            fail(&cfg, "infer", "step", s);
            rc = 1;
            goto done;
        }
        report(&cfg, "infer", &t, peak, 1e-9 * f.fwd, m, NULL);
    }
    if (want_pgd) {
        dd_attack_options ao;
        dd_attack_options_init(&ao, DD_ATTACK_PGD_LINF); /* eps 8/255, step 2/255, 10 steps */
        ao.eps = 8.0f / 255.0f;
        ao.step_size = 2.0f / 255.0f;
        ao.steps = 10;
        s = dd_attack_create(&c.atk, m, &ao);
        if (s != DD_OK) {
            fprintf(stderr, "dd_bench: pgd-at skipped: %s (%s)\n", dd_status_string(s), dd_last_error());
            printf("{\"impl\":\"deepdefense\",\"arch\":\"%s\",\"mode\":\"pgd-at\",\"skipped\":\"dd_attack_"
                   "create: "
                   "%s\"}\n",
                   cfg.arch, dd_status_string(s));
            fflush(stdout);
        } else {
            /* Count the attack's passes once (it adds a clean and a final forward
             * to its 10 forward + input-gradient iterations). */
            dd_attack_results ar;
            dd_attack_results_init(&ar);
            s = dd_attack_run(c.atk, x, y, cfg.batch, x_adv, &ar);
            if (s == DD_OK) s = measure(&c, step_pgd_at, &t);
            if (s != DD_OK) {
                fail(&cfg, "pgd-at", "step", s); /* not fatal: "all" goes on with gfa */
                rc = 1;
            } else {
                /* An input gradient runs backward-data through every layer, the first included. */
                double gflop = plain_gflop + 1e-9 * f.fwd * (double)(ar.forward_passes + ar.gradient_passes);
                snprintf(extra, sizeof extra,
                         ",\"ratio_to_plain\":%.4g,\"attack_forward_passes\":%lld,"
                         "\"attack_gradient_passes\":%lld",
                         t.ms_median / tp.ms_median, (long long)ar.forward_passes,
                         (long long)ar.gradient_passes);
                report(&cfg, "pgd-at", &t, peak, gflop, m, extra);
            }
        }
    }
    if (want_gfa) {
        double rss_plain = peak_rss_mb();
        s = dd_gfa_hook_defaults(m, cfg.gfa_lambda, DD_GFA_SIN2);
        int hooks = 0;
        if (s == DD_OK) s = dd_gfa_num_hooks(m, &hooks);
        if (s == DD_OK) s = measure(&c, step_plain, &t);
        if (s != DD_OK) {
            fail(&cfg, "gfa", "step", s);
            rc = 1;
            goto done;
        }
        /* Four passes: forward (fwd); backward down to the image hook
         * (bwd_weights + bwd_data of every layer: 2 fwd); tangent pass (JVP and
         * second-order weight term of every layer, all inputs being hooked from
         * the image on: 2 fwd); second backward (bwd_weights + bwd_data where
         * needed). About 2.3x a plain step. */
        double gflop = 1e-9 * (6.0 * f.fwd + f.bwd_data);
        snprintf(extra, sizeof extra,
                 ",\"ratio_to_plain\":%.4g,\"rss_ratio_to_plain\":%.4g,\"gfa_lambda\":%g,"
                 "\"hooks\":%d",
                 t.ms_median / tp.ms_median, peak_rss_mb() / rss_plain, (double)cfg.gfa_lambda, hooks);
        report(&cfg, "gfa", &t, peak, gflop, m, extra);
    }

done:
    dd_attack_destroy(c.atk);
    dd_optimizer_destroy(opt);
    dd_model_destroy(m);
    free(x);
    free(x_adv);
    free(logits);
    free(y);
    return rc;
}
