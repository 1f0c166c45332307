/* examples/eval_robustness.c -- how robust is a checkpoint, and how do
 * several compare?
 *
 *   eval_robustness [options] MODEL.safetensors
 *   eval_robustness [options] --compare plain.safetensors gfa.safetensors ...
 *
 * Runs an attack suite on the first --n test images of --data (CIFAR-10
 * binary or IDX; default Debian's Fashion-MNIST) for every checkpoint and
 * writes one report with the checkpoints side by side:
 *   PREFIX.md     robust accuracy per attack and eps (the paper's table),
 *                 median and mean perturbation norms of the minimum-norm
 *                 attacks (DeepFool, EAD, CW) over the samples they fooled,
 *                 and the loss-landscape summary;
 *   PREFIX.json   the same numbers (each robust accuracy also over the
 *                 samples every model classifies correctly, the paper's
 *                 protocol: accuracy_common); PREFIX.csv the same as rows;
 *   PREFIX-accuracy-linf.svg / -l2.svg  robust accuracy against eps, one
 *                 line per checkpoint and attack (minimum-norm attacks give
 *                 their accuracy at each budget from their per-sample norms);
 *   PREFIX-landscape.svg  mean cross-entropy along x + t*d for the radial
 *                 direction d = x/|x| (the input itself) and for random
 *                 tangential directions (Gaussian, orthogonal to x, unit
 *                 L2), t in [-R, R], not clipped to the pixel box.
 * Budgeted attacks run at each eps of --eps (Linf) or --eps-l2 (L2);
 * minimum-norm attacks run once without a budget. Robust accuracy counts
 * a sample as robust when the attack fails on it and it was classified
 * correctly (AutoAttack's count).
 *
 * Long evaluations resume: with --cache DIR each model's results are kept
 * in DIR as soon as that model is done, and a rerun of the same command
 * reads them back instead of attacking again (see "Results cache" below).
 */
#include "common.h"

#include <sys/stat.h>
#include <unistd.h>

#define DEFAULT_DATA_DIR "/usr/share/datasets/fashion-mnist"
#define MAX_MODELS 24
#define MAX_ATTACKS 16
#define MAX_EPS 12
#define MAX_POINTS 101
#define MAX_TRANSFER 4

/* ======================================================================== */
/* Results                                                                    */
/* ======================================================================== */

typedef struct robust_row {
    int attack; /* index into the attack list */
    double eps;
    double acc;
    double seconds;        /* 0 for rows derived from minimum-norm runs */
    unsigned char *robust; /* (n): 1 = classified correctly and not fooled (owned) */
} robust_row;

typedef struct min_norm_row {
    int attack;
    int n, correct, fooled;    /* fooled: clean-correct samples the attack flipped */
    double median[3], mean[3]; /* L2, L1, Linf over the fooled samples */
    double seconds;
} min_norm_row;

typedef struct model_report {
    const char *path;
    char name[128];
    char range[8]; /* what its first layer sees: 01, pm1 or std (a normalize node) */
    double clean;
    unsigned char *clean_mask; /* (n): 1 = classified correctly (owned) */
    robust_row rows[MAX_ATTACKS * MAX_EPS * 2];
    int nrows;
    min_norm_row mn[MAX_ATTACKS];
    int nmn;
    double radial[MAX_POINTS], tangential[MAX_POINTS];
} model_report;

typedef struct attack_spec {
    dd_attack_kind kind;
    const char *name;
    dd_norm norm;
    int min_norm; /* DeepFool, EAD, CW: run without a budget */
    int transfer; /* >= 0: PGD adversarials of source model `transfer`, replayed */
} attack_spec;

typedef struct settings {
    const char *data;
    int synthetic;
    int n, batch, threads;
    double eps_linf[MAX_EPS], eps_l2[MAX_EPS];
    int n_linf, n_l2;
    attack_spec attacks[MAX_ATTACKS];
    int nattacks;
    const char *transfer[MAX_TRANSFER]; /* NAME=PATH of each source model */
    char transfer_name[MAX_TRANSFER][160];
    int ntransfer;
    double transfer_eps;
    int queries, ead_steps, cw_steps;
    int pgd_steps; /* > 0: PGD iterations, step 2.5 eps / steps (Madry) */
    int land_images, land_points, land_dirs;
    double land_radius;
    const char *input_range; /* NULL: read from each checkpoint; else 01|pm1|std, checked */
    const char *out;
    const char *cache; /* NULL, or the directory of the per-model records */
    const char *models[MAX_MODELS];
    int nmodels;
} settings;

/* ======================================================================== */
/* Command line                                                               */
/* ======================================================================== */

static void usage(FILE *f) {
    fprintf(f, "usage: eval_robustness [options] MODEL... | --compare MODEL MODEL...\n"
               "  MODEL is PATH or NAME=PATH (NAME, without '/', heads the report's column;\n"
               "  default: the file's stem)\n"
               "  --data DIR          CIFAR-10 binary or IDX test set (default " DEFAULT_DATA_DIR ")\n"
               "  --synthetic         the synthetic 3x16x16 test set of train_cifar --synthetic\n"
               "  --n N               test images (default 1000)\n"
               "  --batch N           images per attack batch (default 100)\n"
               "  --threads N         OpenMP threads (default: OpenMP's)\n"
               "  --attacks LIST      comma-separated (default fgsm,pgd-linf,apgd-ce-linf,\n"
               "                      deepfool-l2,ead,square-linf,autoattack-linf; any of\n"
               "                      dd_attack_kind_name(), e.g. pgd-l2, cw-l2, apgd-t-linf)\n"
               "  --eps LIST          Linf budgets (default 1/255,2/255,4/255,8/255)\n"
               "  --eps-l2 LIST       L2 budgets (default 0.25,0.5,1)\n"
               "  --queries N         Square's query budget (default: the attack's, 5000)\n"
               "  --ead-steps N       EAD iterations per binary step (default: the attack's)\n"
               "  --cw-steps N        CW iterations per binary step (default: the attack's)\n"
               "  --transfer NAME=PATH  also replay PGD adversarials made on this model (white-box,\n"
               "                      --pgd-steps or 20 steps, at --transfer-eps) against every\n"
               "                      model: a transfer attack (repeatable, up to 4 sources)\n"
               "  --transfer-eps X    Linf budget of the transfer attacks (default 8/255)\n"
               "  --pgd-steps N       PGD iterations, step 2.5 eps / N (default: the attack's,\n"
               "                      10 steps of 2/255 Linf / 0.2 L2)\n"
               "  --landscape N       images for the loss landscape (default 8, 0 = none)\n"
               "  --landscape-radius R  range of t, L2 (default 2)\n"
               "  --landscape-points P  points along each direction (default 21)\n"
               "  --landscape-dirs D  tangential directions per image (default 4)\n"
               "  --input-range R     01|pm1|std: what the checkpoints' first layer must see\n"
               "                      (default: read from each; pm1 = a 0.5/0.5 normalize node,\n"
               "                      x -> 2x - 1). Attacks work in [0,1] pixels either way;\n"
               "                      reports give eps in [0,1] and in [-1,1] units (2x)\n"
               "  --out PREFIX        report files PREFIX.md/.json/.csv/-*.svg (default robustness)\n"
               "  --cache DIR         keep each model's results in DIR (made if missing) as it\n"
               "                      finishes; a rerun of the same command reuses them, so an\n"
               "                      interrupted evaluation resumes after its last finished model\n");
}

/* Splits a comma-separated list of numbers (fractions allowed) into v. */
static int parse_list_or_die(const char *opt, const char *s, double *v, int max) {
    char buf[512];
    if (strlen(s) >= sizeof buf) die("%s: list too long", opt);
    snprintf(buf, sizeof buf, "%s", s);
    int n = 0;
    for (char *tok = strtok(buf, ","); tok != NULL; tok = strtok(NULL, ",")) {
        if (n == max) die("%s: at most %d values", opt, max);
        v[n++] = parse_double_or_die(opt, tok, 0.0, 1e6);
    }
    if (n == 0) die("%s: empty list", opt);
    return n;
}

static void parse_attacks_or_die(settings *s, const char *list) {
    char buf[512];
    if (strlen(list) >= sizeof buf) die("--attacks: list too long");
    snprintf(buf, sizeof buf, "%s", list);
    s->nattacks = 0;
    for (char *tok = strtok(buf, ","); tok != NULL; tok = strtok(NULL, ",")) {
        if (s->nattacks == MAX_ATTACKS) die("--attacks: at most %d", MAX_ATTACKS);
        attack_spec *a = &s->attacks[s->nattacks++];
        a->transfer = -1;
        if (dd_attack_kind_from_name(tok, &a->kind) != DD_OK || a->kind == DD_ATTACK_TRADES_KL)
            die("--attacks: unknown attack '%s'", tok);
        a->name = dd_attack_kind_name(a->kind);
        check_or_die(dd_attack_kind_norm(a->kind, &a->norm), "dd_attack_kind_norm");
        a->min_norm = a->kind == DD_ATTACK_DEEPFOOL_L2 || a->kind == DD_ATTACK_DEEPFOOL_LINF ||
                      a->kind == DD_ATTACK_EAD || a->kind == DD_ATTACK_CW_L2;
        if (!a->min_norm && a->norm != DD_NORM_LINF && a->norm != DD_NORM_L2)
            die("--attacks: '%s' has no Linf or L2 budget", tok);
    }
}

static void parse_args(int argc, char **argv, settings *s) {
    memset(s, 0, sizeof *s);
    s->n = 1000;
    s->batch = 100;
    s->land_images = 8;
    s->land_points = 21;
    s->land_dirs = 4;
    s->land_radius = 2.0;
    s->out = "robustness";
    s->transfer_eps = 8.0 / 255.0;
    s->n_linf = parse_list_or_die("--eps", "1/255,2/255,4/255,8/255", s->eps_linf, MAX_EPS);
    s->n_l2 = parse_list_or_die("--eps-l2", "0.25,0.5,1", s->eps_l2, MAX_EPS);
    parse_attacks_or_die(s, "fgsm,pgd-linf,apgd-ce-linf,deepfool-l2,ead,square-linf,autoattack-linf");
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            exit(0);
        }
        if (strcmp(a, "--synthetic") == 0) {
            s->synthetic = 1;
            continue;
        }
        if (strcmp(a, "--compare") == 0) continue; /* the checkpoints follow, as positional arguments */
        if (strncmp(a, "--", 2) != 0) {
            if (s->nmodels == MAX_MODELS) die("at most %d checkpoints", MAX_MODELS);
            s->models[s->nmodels++] = a;
            continue;
        }
        if (i + 1 >= argc) die("%s needs a value (see --help)", a);
        const char *v = argv[++i];
        if (strcmp(a, "--data") == 0)
            s->data = v;
        else if (strcmp(a, "--n") == 0)
            s->n = (int)parse_long_or_die(a, v, 1, 10000000);
        else if (strcmp(a, "--batch") == 0)
            s->batch = (int)parse_long_or_die(a, v, 1, 65536);
        else if (strcmp(a, "--threads") == 0)
            s->threads = (int)parse_long_or_die(a, v, 0, 1024);
        else if (strcmp(a, "--attacks") == 0)
            parse_attacks_or_die(s, v);
        else if (strcmp(a, "--eps") == 0)
            s->n_linf = parse_list_or_die(a, v, s->eps_linf, MAX_EPS);
        else if (strcmp(a, "--eps-l2") == 0)
            s->n_l2 = parse_list_or_die(a, v, s->eps_l2, MAX_EPS);
        else if (strcmp(a, "--queries") == 0)
            s->queries = (int)parse_long_or_die(a, v, 1, 1000000);
        else if (strcmp(a, "--ead-steps") == 0)
            s->ead_steps = (int)parse_long_or_die(a, v, 1, 1000000);
        else if (strcmp(a, "--cw-steps") == 0)
            s->cw_steps = (int)parse_long_or_die(a, v, 1, 1000000);
        else if (strcmp(a, "--transfer") == 0) {
            if (s->ntransfer == MAX_TRANSFER) die("--transfer: at most %d sources", MAX_TRANSFER);
            s->transfer[s->ntransfer++] = v;
        } else if (strcmp(a, "--transfer-eps") == 0)
            s->transfer_eps = parse_double_or_die(a, v, 0.0, 1.0);
        else if (strcmp(a, "--pgd-steps") == 0)
            s->pgd_steps = (int)parse_long_or_die(a, v, 1, 100000);
        else if (strcmp(a, "--landscape") == 0)
            s->land_images = (int)parse_long_or_die(a, v, 0, 65536);
        else if (strcmp(a, "--landscape-radius") == 0)
            s->land_radius = parse_double_or_die(a, v, 1e-6, 1e6);
        else if (strcmp(a, "--landscape-points") == 0)
            s->land_points = (int)parse_long_or_die(a, v, 3, MAX_POINTS);
        else if (strcmp(a, "--landscape-dirs") == 0)
            s->land_dirs = (int)parse_long_or_die(a, v, 1, 1000);
        else if (strcmp(a, "--out") == 0)
            s->out = v;
        else if (strcmp(a, "--cache") == 0)
            s->cache = v;
        else if (strcmp(a, "--input-range") == 0) {
            if (strcmp(v, "01") != 0 && strcmp(v, "pm1") != 0 && strcmp(v, "std") != 0)
                die("--input-range: unknown '%s' (01, pm1, std)", v);
            s->input_range = v;
        } else
            die("unknown option '%s' (see --help)", a);
    }
    if (s->nmodels == 0) {
        usage(stderr);
        die("no checkpoint given");
    }
    if (s->land_images > s->batch) s->land_images = s->batch;
    /* each transfer source becomes one more row kind */
    for (int t = 0; t < s->ntransfer; t++) {
        if (s->nattacks == MAX_ATTACKS) die("--transfer: at most %d attacks and sources in all", MAX_ATTACKS);
        const char *eq = strchr(s->transfer[t], '=');
        if (eq == NULL || eq == s->transfer[t] || (size_t)(eq - s->transfer[t]) >= 100)
            die("--transfer: expected NAME=PATH, got '%s'", s->transfer[t]);
        snprintf(s->transfer_name[t], sizeof s->transfer_name[t], "transfer-pgd<-%.*s",
                 (int)(eq - s->transfer[t]), s->transfer[t]);
        attack_spec *a = &s->attacks[s->nattacks++];
        a->kind = DD_ATTACK_PGD_LINF;
        a->name = s->transfer_name[t];
        a->norm = DD_NORM_LINF;
        a->min_norm = 0;
        a->transfer = t;
    }
}

/* The transfer sources' adversarials: PGD (white-box on the source) at
 * transfer_eps over the n images; adv[t] (n * per floats, malloc'd). */
static void make_transfer_or_die(const settings *s, const float *x, const int32_t *y, int n, size_t per,
                                 float **adv) {
    for (int t = 0; t < s->ntransfer; t++) {
        const char *path = strchr(s->transfer[t], '=') + 1;
        dd_model_options mo;
        dd_model_options_init(&mo);
        mo.num_threads = s->threads;
        dd_model *m = NULL;
        check_or_die(dd_model_load_ex(path, &mo, s->batch, &m), path);
        int mc = 0, mh = 0, mw = 0;
        check_or_die(dd_model_input_shape(m, &mc, &mh, &mw), "dd_model_input_shape");
        if ((size_t)mc * mh * mw != per)
            die("--transfer %s: takes %dx%dx%d images, not the test set's", path, mc, mh, mw);
        check_or_die(dd_gfa_clear(m), "dd_gfa_clear");
        dd_attack_options ao;
        dd_attack_options_init(&ao, DD_ATTACK_PGD_LINF);
        ao.eps = (float)s->transfer_eps;
        ao.steps = s->pgd_steps > 0 ? s->pgd_steps : 20;
        ao.step_size = (float)(2.5 * s->transfer_eps / ao.steps);
        dd_attack *at = NULL;
        check_or_die(dd_attack_create(&at, m, &ao), "transfer source attack");
        adv[t] = malloc_or_die((size_t)n * per, sizeof *adv[t]);
        for (int start = 0; start < n; start += s->batch) {
            int b = n - start < s->batch ? n - start : s->batch;
            dd_attack_results r;
            dd_attack_results_init(&r);
            check_or_die(
                dd_attack_run(at, x + (size_t)start * per, y + start, b, adv[t] + (size_t)start * per, &r),
                "transfer source attack");
        }
        dd_attack_destroy(at);
        dd_model_destroy(m);
        printf("transfer source %s: PGD-%d adversarials at eps %.4g\n", path, ao.steps, s->transfer_eps);
    }
}

/* ======================================================================== */
/* Measurements                                                               */
/* ======================================================================== */

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median_of(double *v, int n) {
    if (n == 0) return NAN;
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static void attack_options(const settings *s, const attack_spec *a, dd_attack_options *ao) {
    dd_attack_options_init(ao, a->kind);
    if (s->queries > 0) ao->queries = s->queries;
    if (a->kind == DD_ATTACK_EAD && s->ead_steps > 0) ao->steps = s->ead_steps;
    if (a->kind == DD_ATTACK_CW_L2 && s->cw_steps > 0) ao->steps = s->cw_steps;
}

/* Robust accuracy of m under a budgeted attack at eps over the n images x;
 * robust (n) receives each sample's verdict. */
static double budgeted_or_die(const settings *s, dd_model *m, const attack_spec *a, double eps,
                              const float *x, const int32_t *y, int n, size_t per, float *xa,
                              unsigned char *robust) {
    dd_attack_options ao;
    attack_options(s, a, &ao);
    ao.eps = (float)eps;
    if ((a->kind == DD_ATTACK_PGD_LINF || a->kind == DD_ATTACK_PGD_L2) && s->pgd_steps > 0) {
        ao.steps = s->pgd_steps;
        ao.step_size = (float)(2.5 * eps / s->pgd_steps);
    }
    dd_attack *at = NULL;
    check_or_die(dd_attack_create(&at, m, &ao), a->name);
    int32_t *succ = malloc_or_die((size_t)s->batch, sizeof *succ);
    int32_t *clean = malloc_or_die((size_t)s->batch, sizeof *clean);
    long fooled = 0;
    for (int start = 0; start < n; start += s->batch) {
        int b = n - start < s->batch ? n - start : s->batch;
        dd_attack_results r;
        dd_attack_results_init(&r);
        r.success = succ;
        r.clean_correct = clean;
        check_or_die(dd_attack_run(at, x + (size_t)start * per, y + start, b, xa, &r), a->name);
        fooled += r.num_success;
        for (int i = 0; i < b; i++) robust[start + i] = clean[i] && !succ[i];
    }
    free(succ);
    free(clean);
    dd_attack_destroy(at);
    return 1.0 - (double)fooled / n;
}

/* mask (n): 1 where m's eval-mode argmax (first maximum) equals the label. */
static void clean_mask_or_die(dd_model *m, const float *x, const int32_t *y, int n, size_t per, int k,
                              int batch, unsigned char *mask) {
    float *z = malloc_or_die((size_t)batch * (size_t)k, sizeof *z);
    for (int start = 0; start < n; start += batch) {
        int b = n - start < batch ? n - start : batch;
        check_or_die(dd_model_predict(m, x + (size_t)start * per, b, z), "dd_model_predict");
        for (int i = 0; i < b; i++) {
            const float *zi = z + (size_t)i * k;
            int arg = 0;
            for (int j = 1; j < k; j++)
                if (zi[j] > zi[arg]) arg = j;
            mask[start + i] = arg == y[start + i];
        }
    }
    free(z);
}

/* What the first layer of m sees: "pm1" after a normalize node with every
 * mean and std 0.5, "std" after another normalize node, "01" without one;
 * origin (C floats) receives the pixel that maps to 0 (the normalize
 * node's mean, or 0). */
static void input_range_of(const dd_model *m, int channels, char *out, size_t size, float *origin) {
    dd_node_info info;
    memset(&info, 0, sizeof info);
    int nn = 0;
    check_or_die(dd_model_num_nodes(m, &nn), "dd_model_num_nodes");
    for (int c = 0; c < channels; c++) origin[c] = 0.0f;
    snprintf(out, size, "01");
    if (nn < 2) return;
    check_or_die(dd_model_node_info(m, 1, &info), "dd_model_node_info");
    if (info.type != DD_NODE_NORMALIZE || info.inputs[0] != DD_INPUT) return;
    int half = 1;
    for (int c = 0; c < channels; c++) {
        origin[c] = info.mean[c];
        half &= info.mean[c] == 0.5f && info.std[c] == 0.5f;
    }
    snprintf(out, size, "%s", half ? "pm1" : "std");
}

/* Dies when --input-range names another range than rep's model has. */
static void check_range_or_die(const settings *s, const model_report *rep) {
    if (s->input_range != NULL && strcmp(s->input_range, rep->range) != 0)
        die("%s: its first layer sees '%s' inputs, not --input-range %s", rep->path, rep->range,
            s->input_range);
}

/* A minimum-norm attack without budget: statistics of the norms it needed,
 * and the accuracy it implies at each budget of its own norm (L2 or Linf). */
static void min_norm_or_die(const settings *s, dd_model *m, int ai, const float *x, const int32_t *y, int n,
                            size_t per, float *xa, model_report *rep) {
    const attack_spec *a = &s->attacks[ai];
    dd_attack_options ao;
    attack_options(s, a, &ao);
    dd_attack *at = NULL;
    check_or_die(dd_attack_create(&at, m, &ao), a->name);
    int32_t *succ = malloc_or_die((size_t)n, sizeof *succ);
    int32_t *clean = malloc_or_die((size_t)n, sizeof *clean);
    float *nrm[3];
    for (int k = 0; k < 3; k++) nrm[k] = malloc_or_die((size_t)n, sizeof *nrm[k]);
    double t0 = now_seconds();
    for (int start = 0; start < n; start += s->batch) {
        int b = n - start < s->batch ? n - start : s->batch;
        dd_attack_results r;
        dd_attack_results_init(&r);
        r.success = succ + start;
        r.clean_correct = clean + start;
        r.norm_l2 = nrm[0] + start;
        r.norm_l1 = nrm[1] + start;
        r.norm_linf = nrm[2] + start;
        check_or_die(dd_attack_run(at, x + (size_t)start * per, y + start, b, xa, &r), a->name);
    }
    dd_attack_destroy(at);

    min_norm_row *row = &rep->mn[rep->nmn++];
    memset(row, 0, sizeof *row);
    row->attack = ai;
    row->n = n;
    row->seconds = now_seconds() - t0;
    for (int i = 0; i < n; i++) row->correct += clean[i] != 0;
    double *v = malloc_or_die((size_t)n, sizeof *v);
    for (int k = 0; k < 3; k++) {
        int cnt = 0;
        double sum = 0.0;
        for (int i = 0; i < n; i++)
            if (succ[i] && clean[i]) {
                v[cnt++] = nrm[k][i];
                sum += nrm[k][i];
            }
        row->fooled = cnt;
        row->mean[k] = cnt ? sum / cnt : NAN;
        row->median[k] = median_of(v, cnt);
    }
    free(v);

    /* Accuracy at budget eps: correct, and not fooled within eps. */
    if (a->norm == DD_NORM_L2 || a->norm == DD_NORM_LINF) {
        const double *eps = a->norm == DD_NORM_L2 ? s->eps_l2 : s->eps_linf;
        int ne = a->norm == DD_NORM_L2 ? s->n_l2 : s->n_linf;
        const float *nv = a->norm == DD_NORM_L2 ? nrm[0] : nrm[2];
        for (int e = 0; e < ne; e++) {
            long robust = 0;
            robust_row *rr = &rep->rows[rep->nrows++];
            rr->robust = malloc_or_die((size_t)n, 1);
            for (int i = 0; i < n; i++) {
                rr->robust[i] = clean[i] && !(succ[i] && nv[i] <= eps[e]);
                robust += rr->robust[i];
            }
            rr->attack = ai;
            rr->eps = eps[e];
            rr->acc = (double)robust / n;
            rr->seconds = 0.0;
        }
    }
    free(succ);
    free(clean);
    for (int k = 0; k < 3; k++) free(nrm[k]);
}

/* Mean cross-entropy of the n images in xb (labels y) under m. */
static double mean_loss_or_die(dd_model *m, const float *xb, const int32_t *y, int n, int k, float *logits) {
    check_or_die(dd_model_forward(m, xb, n, DD_EVAL, logits), "dd_model_forward");
    double sum = 0.0;
    for (int i = 0; i < n; i++) {
        const float *z = logits + (size_t)i * k;
        double mx = z[0];
        for (int j = 1; j < k; j++) mx = z[j] > mx ? z[j] : mx;
        double se = 0.0;
        for (int j = 0; j < k; j++) se += exp(z[j] - mx);
        sum += mx + log(se) - z[y[i]];
    }
    return sum / n;
}

/* Loss along x + t d, radial d = x/|x| and tangential d (random, orthogonal
 * to x, unit), t on land_points points of [-R, R]; mean over images and
 * tangential directions. Directions are drawn from a fixed seed, so every
 * model sees the same ones. */
static void landscape_or_die(const settings *s, dd_model *m, const float *x, const int32_t *y, size_t per,
                             int k, const float *origin, int channels, model_report *rep) {
    size_t plane = per / (size_t)channels;
    int ni = s->land_images, np = s->land_points;
    float *dr = malloc_or_die((size_t)ni * per, sizeof *dr);
    float *dt = malloc_or_die((size_t)ni * per * (size_t)s->land_dirs, sizeof *dt);
    float *xb = malloc_or_die((size_t)ni * per, sizeof *xb);
    float *logits = malloc_or_die((size_t)ni * (size_t)k, sizeof *logits);
    uint64_t st = 12345; /* fixed: the same directions for every model */
    for (int i = 0; i < ni; i++) {
        /* radial: from the pixel the first layer sees as 0 (the model's
         * origin: 0, 0.5 for pm1, the channel means for std) to x */
        const float *xi = x + (size_t)i * per;
        double nx = 0.0;
        for (size_t j = 0; j < per; j++) {
            double v = (double)xi[j] - origin[j / plane];
            nx += v * v;
        }
        nx = sqrt(nx) > 0 ? sqrt(nx) : 1.0;
        for (size_t j = 0; j < per; j++)
            dr[(size_t)i * per + j] = (float)(((double)xi[j] - origin[j / plane]) / nx);
        for (int d = 0; d < s->land_dirs; d++) {
            float *g = dt + ((size_t)d * ni + i) * per;
            const float *r = dr + (size_t)i * per;
            double dot = 0.0, ng = 0.0;
            for (size_t j = 0; j < per; j++) {
                double u1 = ((double)(example_rng_next(&st) >> 11) + 1.0) * 0x1.0p-53;
                double u2 = (double)(example_rng_next(&st) >> 11) * 0x1.0p-53;
                g[j] = (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2)); /* Box-Muller */
                dot += (double)g[j] * r[j];
            }
            for (size_t j = 0; j < per; j++) {
                g[j] = (float)(g[j] - dot * r[j]);
                ng += (double)g[j] * g[j];
            }
            ng = sqrt(ng) > 0 ? sqrt(ng) : 1.0;
            for (size_t j = 0; j < per; j++) g[j] = (float)(g[j] / ng);
        }
    }
    for (int p = 0; p < np; p++) {
        double t = -s->land_radius + 2.0 * s->land_radius * p / (np - 1);
        for (size_t j = 0; j < (size_t)ni * per; j++) xb[j] = (float)(x[j] + t * dr[j]);
        rep->radial[p] = mean_loss_or_die(m, xb, y, ni, k, logits);
        double acc = 0.0;
        for (int d = 0; d < s->land_dirs; d++) {
            const float *g = dt + (size_t)d * ni * per;
            for (size_t j = 0; j < (size_t)ni * per; j++) xb[j] = (float)(x[j] + t * g[j]);
            acc += mean_loss_or_die(m, xb, y, ni, k, logits);
        }
        rep->tangential[p] = acc / s->land_dirs;
    }
    free(dr);
    free(dt);
    free(xb);
    free(logits);
}

/* ======================================================================== */
/* Report writers                                                             */
/* ======================================================================== */

static const char *eps_text(dd_norm norm, double eps, char *buf, size_t size) {
    double k = eps * 255.0;
    if (norm == DD_NORM_LINF && eps > 0 && fabs(k - floor(k + 0.5)) < 1e-6)
        snprintf(buf, size, "%.0f/255", floor(k + 0.5));
    else
        snprintf(buf, size, "%.4g", eps);
    return buf;
}

static const char *norm_name(dd_norm n) {
    return n == DD_NORM_L2 ? "L2" : n == DD_NORM_L1 ? "L1" : n == DD_NORM_LINF ? "Linf" : "L0";
}

static FILE *open_or_die(const char *prefix, const char *suffix, char *path, size_t size) {
    snprintf(path, size, "%s%s", prefix, suffix);
    FILE *f = fopen(path, "w");
    if (f == NULL) die("cannot write %s: %s", path, strerror(errno));
    return f;
}

static void close_or_die(FILE *f, const char *path) {
    if (ferror(f) || fclose(f) != 0) die("error writing %s", path);
    printf("wrote %s\n", path);
}

/* The (attack, eps) rows of the union of all reports, in the order of the
 * first report that has them (all reports run the same suite). */
static const robust_row *find_row(const model_report *r, int attack, double eps) {
    for (int i = 0; i < r->nrows; i++)
        if (r->rows[i].attack == attack && r->rows[i].eps == eps) return &r->rows[i];
    return NULL;
}

/* The paper's protocol: common (ntest, malloc'd) flags the samples every
 * one of the nr models classifies correctly; returns how many there are. */
static int common_samples(const model_report *reps, int nr, int ntest, unsigned char **common) {
    *common = malloc_or_die((size_t)ntest, 1);
    int k = 0;
    for (int i = 0; i < ntest; i++) {
        (*common)[i] = 1;
        for (int m = 0; m < nr; m++) (*common)[i] &= reps[m].clean_mask[i];
        k += (*common)[i];
    }
    return k;
}

/* Robust accuracy of row r over the nsub > 0 samples flagged in subset. */
static double subset_accuracy(const robust_row *r, const unsigned char *subset, int ntest, int nsub) {
    int k = 0;
    for (int j = 0; j < ntest; j++) k += subset[j] && r->robust[j];
    return (double)k / nsub;
}

/* The robust-accuracy table (percent): over all ntest samples, or, with
 * subset (ntest flags), over the flagged ones. */
static void write_accuracy_table(FILE *f, const settings *s, const model_report *reps, int nr, int ntest,
                                 const unsigned char *subset) {
    char e[32], e2[32];
    int nsub = 0;
    for (int i = 0; subset && i < ntest; i++) nsub += subset[i];
    fprintf(f, "| attack | norm | eps | eps in [-1,1] |");
    for (int m = 0; m < nr; m++) fprintf(f, " %s |", reps[m].name);
    fprintf(f, "\n|---|---|---|---|");
    for (int m = 0; m < nr; m++) fprintf(f, "---:|");
    fprintf(f, "\n| clean | - | 0 | 0 |");
    for (int m = 0; m < nr; m++) fprintf(f, " %.2f |", subset ? 100.0 : 100.0 * reps[m].clean);
    fprintf(f, "\n");
    for (int i = 0; i < reps[0].nrows; i++) {
        const robust_row *r0 = &reps[0].rows[i];
        const attack_spec *a = &s->attacks[r0->attack];
        fprintf(f, "| %s | %s | %s | %s |", a->name, norm_name(a->norm),
                eps_text(a->norm, r0->eps, e, sizeof e), eps_text(a->norm, 2.0 * r0->eps, e2, sizeof e2));
        for (int m = 0; m < nr; m++) {
            const robust_row *r = find_row(&reps[m], r0->attack, r0->eps);
            if (r == NULL) {
                fprintf(f, " - |");
                continue;
            }
            fprintf(f, " %.2f |", 100.0 * (subset ? subset_accuracy(r, subset, ntest, nsub) : r->acc));
        }
        fprintf(f, "\n");
    }
}

static void write_markdown(const settings *s, const model_report *reps, int nr, int ntest,
                           const char *source) {
    char path[1024];
    FILE *f = open_or_die(s->out, ".md", path, sizeof path);
    fprintf(f, "# Robustness report\n\n");
    fprintf(f,
            "%d test images of %s; robust accuracy in %%, a sample counts as robust when it is "
            "classified correctly and the attack fails on it. Minimum-norm attacks "
            "(DeepFool, EAD, CW) run without a budget; their rows give the accuracy implied "
            "by their per-sample norms. Attacks work on [0,1] pixels; eps is given in "
            "those units and, beside it, in [-1,1] units (twice as large), the units of "
            "models whose first layer sees 2x - 1.\n\nWhat each model's first layer sees "
            "(01: [0,1] pixels; pm1: 2x - 1; std: per-channel standardised):",
            ntest, source);
    for (int m = 0; m < nr; m++) fprintf(f, "%s%s %s", m ? ", " : " ", reps[m].name, reps[m].range);
    fprintf(f, ".\n\n");
    write_accuracy_table(f, s, reps, nr, ntest, NULL);

    /* The paper's protocol: only the samples every model gets right. */
    unsigned char *common = NULL;
    int ncommon = common_samples(reps, nr, ntest, &common);
    fprintf(f,
            "\n## Only the samples every model classifies correctly\n\n"
            "The protocol of the paper under test: %d of the %d images are classified "
            "correctly by all %d models; robust accuracy over those (clean is 100%% by "
            "construction). It favours no model but hides clean-accuracy differences.\n\n",
            ncommon, ntest, nr);
    if (ncommon > 0) write_accuracy_table(f, s, reps, nr, ntest, common);
    free(common);
    if (reps[0].nmn > 0) {
        static const char *nn[3] = {"L2", "L1", "Linf"};
        fprintf(f, "\n## Minimum-norm attacks\n\nNorms of the perturbations that fooled "
                   "correctly classified samples (median / mean).\n\n| attack | statistic |");
        for (int m = 0; m < nr; m++) fprintf(f, " %s |", reps[m].name);
        fprintf(f, "\n|---|---|");
        for (int m = 0; m < nr; m++) fprintf(f, "---:|");
        fprintf(f, "\n");
        for (int j = 0; j < reps[0].nmn; j++) {
            const char *an = s->attacks[reps[0].mn[j].attack].name;
            fprintf(f, "| %s | fooled / correct |", an);
            for (int m = 0; m < nr; m++)
                fprintf(f, " %d / %d |", reps[m].mn[j].fooled, reps[m].mn[j].correct);
            fprintf(f, "\n");
            for (int k = 0; k < 3; k++) {
                fprintf(f, "| %s | %s median / mean |", an, nn[k]);
                for (int m = 0; m < nr; m++)
                    fprintf(f, " %.4g / %.4g |", reps[m].mn[j].median[k], reps[m].mn[j].mean[k]);
                fprintf(f, "\n");
            }
        }
    }
    if (s->land_images > 0) {
        int np = s->land_points;
        fprintf(f,
                "\n## Loss landscape\n\nMean cross-entropy of %d test images at x + t d, "
                "|t| <= %g (L2): d = (x - o)/|x - o| (radial, from the pixel o the model's "
                "first layer maps to 0: 0 for 01, 0.5 for pm1, the channel means for std) "
                "or random unit directions orthogonal to it (tangential, %d per image). "
                "See %s-landscape.svg.\n\n",
                s->land_images, s->land_radius, s->land_dirs, s->out);
        fprintf(f,
                "| model | loss at x | radial t=-%g | radial t=+%g | tangential t=+-%g |\n"
                "|---|---:|---:|---:|---:|\n",
                s->land_radius, s->land_radius, s->land_radius);
        for (int m = 0; m < nr; m++)
            fprintf(f, "| %s | %.4f | %.4f | %.4f | %.4f |\n", reps[m].name, reps[m].radial[np / 2],
                    reps[m].radial[0], reps[m].radial[np - 1],
                    0.5 * (reps[m].tangential[0] + reps[m].tangential[np - 1]));
    }
    fprintf(f, "\nCheckpoints:");
    for (int m = 0; m < nr; m++) fprintf(f, "%s`%s`", m ? ", " : " ", reps[m].path);
    fprintf(f, ".\n");
    close_or_die(f, path);
}

static void json_string(FILE *f, const char *s) {
    fputc('"', f);
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\')
            fprintf(f, "\\%c", ch);
        else if (ch < 0x20)
            fprintf(f, "\\u%04x", ch);
        else
            fputc(ch, f);
    }
    fputc('"', f);
}

/* JSON has no NaN: a missing statistic is null. */
static void json_number(FILE *f, double v) {
    if (isfinite(v))
        fprintf(f, "%.6g", v);
    else
        fprintf(f, "null");
}

static void write_json(const settings *s, const model_report *reps, int nr, int ntest, const char *source) {
    char path[1024];
    FILE *f = open_or_die(s->out, ".json", path, sizeof path);
    fprintf(f, "{\n  \"data\": ");
    json_string(f, source);
    unsigned char *common = NULL;
    int ncommon = common_samples(reps, nr, ntest, &common);
    fprintf(f, ",\n  \"images\": %d,\n  \"common_images\": %d,\n  \"models\": [\n", ntest, ncommon);
    for (int m = 0; m < nr; m++) {
        const model_report *r = &reps[m];
        fprintf(f, "    {\n      \"name\": ");
        json_string(f, r->name);
        fprintf(f, ",\n      \"path\": ");
        json_string(f, r->path);
        fprintf(f, ",\n      \"input_range\": \"%s\",\n      \"clean_accuracy\": ", r->range);
        json_number(f, r->clean);
        fprintf(f, ",\n      \"robust\": [");
        for (int i = 0; i < r->nrows; i++) {
            const attack_spec *a = &s->attacks[r->rows[i].attack];
            fprintf(f, "%s\n        {\"attack\": \"%s\", \"norm\": \"%s\", \"eps\": ", i ? "," : "", a->name,
                    norm_name(a->norm));
            json_number(f, r->rows[i].eps);
            fprintf(f, ", \"eps_pm1\": ");
            json_number(f, 2.0 * r->rows[i].eps);
            fprintf(f, ", \"accuracy\": ");
            json_number(f, r->rows[i].acc);
            fprintf(f, ", \"accuracy_common\": "); /* over the common samples; null when none */
            json_number(f, ncommon > 0 ? subset_accuracy(&r->rows[i], common, ntest, ncommon) : NAN);
            fprintf(f, ", \"seconds\": %.3f, \"from_min_norm\": %s}", r->rows[i].seconds,
                    a->min_norm ? "true" : "false");
        }
        fprintf(f, "\n      ],\n      \"min_norm\": [");
        for (int j = 0; j < r->nmn; j++) {
            const min_norm_row *mn = &r->mn[j];
            fprintf(f, "%s\n        {\"attack\": \"%s\", \"images\": %d, \"fooled\": %d", j ? "," : "",
                    s->attacks[mn->attack].name, mn->n, mn->fooled);
            static const char *nn[3] = {"l2", "l1", "linf"};
            for (int k = 0; k < 3; k++) {
                fprintf(f, ", \"median_%s\": ", nn[k]);
                json_number(f, mn->median[k]);
                fprintf(f, ", \"mean_%s\": ", nn[k]);
                json_number(f, mn->mean[k]);
            }
            fprintf(f, ", \"seconds\": %.3f}", mn->seconds);
        }
        fprintf(f, "\n      ]");
        if (s->land_images > 0) {
            fprintf(f, ",\n      \"landscape\": {\"t\": [");
            for (int p = 0; p < s->land_points; p++)
                fprintf(f, "%s%.6g", p ? ", " : "",
                        -s->land_radius + 2.0 * s->land_radius * p / (s->land_points - 1));
            fprintf(f, "],\n        \"radial\": [");
            for (int p = 0; p < s->land_points; p++) {
                fprintf(f, "%s", p ? ", " : "");
                json_number(f, r->radial[p]);
            }
            fprintf(f, "],\n        \"tangential\": [");
            for (int p = 0; p < s->land_points; p++) {
                fprintf(f, "%s", p ? ", " : "");
                json_number(f, r->tangential[p]);
            }
            fprintf(f, "]}");
        }
        fprintf(f, "\n    }%s\n", m + 1 < nr ? "," : "");
    }
    fprintf(f, "  ]\n}\n");
    free(common);
    close_or_die(f, path);
}

static void write_csv(const settings *s, const model_report *reps, int nr) {
    char path[1024];
    FILE *f = open_or_die(s->out, ".csv", path, sizeof path);
    fprintf(f, "model,attack,norm,eps,accuracy,fooled,median_l2,mean_l2,median_l1,mean_l1,"
               "median_linf,mean_linf,seconds\n");
    for (int m = 0; m < nr; m++) {
        const model_report *r = &reps[m];
        fprintf(f, "%s,clean,,0,%.6g,,,,,,,,\n", r->name, r->clean);
        for (int i = 0; i < r->nrows; i++) {
            const attack_spec *a = &s->attacks[r->rows[i].attack];
            fprintf(f, "%s,%s,%s,%.6g,%.6g,,,,,,,,%.3f\n", r->name, a->name, norm_name(a->norm),
                    r->rows[i].eps, r->rows[i].acc, r->rows[i].seconds);
        }
        for (int j = 0; j < r->nmn; j++) {
            const min_norm_row *mn = &r->mn[j];
            const attack_spec *a = &s->attacks[mn->attack];
            fprintf(f, "%s,%s,%s,inf,,%d,%.6g,%.6g,%.6g,%.6g,%.6g,%.6g,%.3f\n", r->name, a->name,
                    norm_name(a->norm), mn->fooled, mn->median[0], mn->mean[0], mn->median[1], mn->mean[1],
                    mn->median[2], mn->mean[2], mn->seconds);
        }
    }
    close_or_die(f, path);
}

/* ---- SVG line charts ---- */

static void xml_text(FILE *f, const char *s) {
    for (; *s; s++) {
        if (*s == '<')
            fputs("&lt;", f);
        else if (*s == '>')
            fputs("&gt;", f);
        else if (*s == '&')
            fputs("&amp;", f);
        else
            fputc(*s, f);
    }
}

typedef struct series {
    char label[160];
    int n;
    double x[MAX_POINTS], y[MAX_POINTS];
    int color, dashed;
} series;

/* A round tick spacing (1, 2 or 5 times a power of ten) giving about
 * `target` intervals over range. */
static double nice_step(double range, int target) {
    double raw = range / target, mag = pow(10.0, floor(log10(raw))), f = raw / mag;
    return (f < 1.5 ? 1.0 : f < 3.0 ? 2.0 : f < 7.0 ? 5.0 : 10.0) * mag;
}

/* Line chart of ns series; y_from_zero: the y axis starts at 0. */
static void write_svg(const char *path, const char *title, const char *xlabel, const char *ylabel,
                      const series *sr, int ns, int y_from_zero) {
    static const char *palette[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd",
                                    "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"};
    const double W = 760, H = 440, L = 70, R = 240, T = 40, B = 60;
    double x0 = INFINITY, x1 = -INFINITY, y0 = INFINITY, y1 = -INFINITY;
    for (int i = 0; i < ns; i++)
        for (int p = 0; p < sr[i].n; p++) {
            if (!isfinite(sr[i].y[p])) continue;
            x0 = fmin(x0, sr[i].x[p]);
            x1 = fmax(x1, sr[i].x[p]);
            y0 = fmin(y0, sr[i].y[p]);
            y1 = fmax(y1, sr[i].y[p]);
        }
    if (y_from_zero) y0 = 0.0;
    if (!(x1 > x0)) {
        x0 -= 1;
        x1 += 1;
    }
    if (!(y1 > y0)) {
        y0 -= 1;
        y1 += 1;
    }
    double xs = nice_step(x1 - x0, 5), ys = nice_step(y1 - y0, 5);
    x0 = floor(x0 / xs + 1e-9) * xs;
    x1 = ceil(x1 / xs - 1e-9) * xs;
    y0 = floor(y0 / ys + 1e-9) * ys;
    y1 = ceil(y1 / ys - 1e-9) * ys;
    FILE *f = fopen(path, "w");
    if (f == NULL) die("cannot write %s: %s", path, strerror(errno));
    fprintf(f,
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" "
            "font-family=\"sans-serif\" font-size=\"12\">\n"
            "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n"
            "<text x=\"%.0f\" y=\"24\" font-size=\"15\">%s</text>\n",
            W, H, L, title);
    double pw = W - L - R, ph = H - T - B;
#define PX(v) (L + ((v)-x0) / (x1 - x0) * pw)
#define PY(v) (T + ph - ((v)-y0) / (y1 - y0) * ph)
    fprintf(f,
            "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"none\" "
            "stroke=\"black\"/>\n",
            L, T, pw, ph);
    for (double xv = x0; xv <= x1 + 0.5 * xs; xv += xs) {
        fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#ddd\"/>\n", PX(xv), T,
                PX(xv), T + ph);
        fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%.4g</text>\n", PX(xv), T + ph + 16,
                fabs(xv) < 1e-9 * xs ? 0.0 : xv);
    }
    for (double yv = y0; yv <= y1 + 0.5 * ys; yv += ys) {
        fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#ddd\"/>\n", L, PY(yv),
                L + pw, PY(yv));
        fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\">%.4g</text>\n", L - 6, PY(yv) + 4,
                fabs(yv) < 1e-9 * ys ? 0.0 : yv);
    }
    fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%s</text>\n", L + pw / 2, H - 18, xlabel);
    fprintf(f,
            "<text transform=\"translate(18 %.1f) rotate(-90)\" text-anchor=\"middle\">%s"
            "</text>\n",
            T + ph / 2, ylabel);
    for (int i = 0; i < ns; i++) {
        const char *col = palette[sr[i].color % 10];
        fprintf(f, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"2\"%s points=\"", col,
                sr[i].dashed ? " stroke-dasharray=\"6 4\"" : "");
        for (int p = 0; p < sr[i].n; p++)
            if (isfinite(sr[i].y[p])) fprintf(f, "%.1f,%.1f ", PX(sr[i].x[p]), PY(sr[i].y[p]));
        fprintf(f, "\"/>\n");
        if (sr[i].n <= 12) /* few points: mark them */
            for (int p = 0; p < sr[i].n; p++)
                if (isfinite(sr[i].y[p]))
                    fprintf(f, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3\" fill=\"%s\"/>\n", PX(sr[i].x[p]),
                            PY(sr[i].y[p]), col);
        double ly = T + 10 + 18 * i;
        fprintf(f,
                "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\" "
                "stroke-width=\"2\"%s/>\n",
                L + pw + 12, ly, L + pw + 40, ly, col, sr[i].dashed ? " stroke-dasharray=\"6 4\"" : "");
        fprintf(f, "<text x=\"%.1f\" y=\"%.1f\">", L + pw + 46, ly + 4);
        xml_text(f, sr[i].label);
        fprintf(f, "</text>\n");
    }
#undef PX
#undef PY
    fprintf(f, "</svg>\n");
    if (ferror(f) || fclose(f) != 0) die("error writing %s", path);
    printf("wrote %s\n", path);
}

/* Accuracy against eps for the attacks of one norm (clean accuracy at 0). */
static void write_accuracy_svg(const settings *s, const model_report *reps, int nr, dd_norm norm) {
    series *sr = malloc_or_die((size_t)MAX_MODELS * MAX_ATTACKS, sizeof *sr);
    int ns = 0;
    for (int ai = 0; ai < s->nattacks; ai++) {
        const attack_spec *a = &s->attacks[ai];
        if (a->norm != norm) continue;
        for (int m = 0; m < nr; m++) {
            series *q = &sr[ns];
            memset(q, 0, sizeof *q);
            snprintf(q->label, sizeof q->label, "%s: %s", reps[m].name, a->name);
            q->x[q->n] = 0.0;
            q->y[q->n++] = 100.0 * reps[m].clean;
            for (int i = 0; i < reps[m].nrows && q->n < MAX_POINTS; i++)
                if (reps[m].rows[i].attack == ai) {
                    q->x[q->n] = norm == DD_NORM_LINF ? 255.0 * reps[m].rows[i].eps : reps[m].rows[i].eps;
                    q->y[q->n++] = 100.0 * reps[m].rows[i].acc;
                }
            q->color = ai;
            q->dashed = m % 2;
            if (q->n > 1) ns++;
        }
    }
    if (ns > 0) {
        char path[1024];
        snprintf(path, sizeof path, "%s-accuracy-%s.svg", s->out, norm == DD_NORM_LINF ? "linf" : "l2");
        write_svg(path,
                  norm == DD_NORM_LINF ? "Robust accuracy, Linf attacks" : "Robust accuracy, L2 attacks",
                  norm == DD_NORM_LINF ? "eps (x/255)" : "eps (L2)", "accuracy (%)", sr, ns, 1);
    }
    free(sr);
}

static void write_landscape_svg(const settings *s, const model_report *reps, int nr) {
    series *sr = malloc_or_die((size_t)2 * MAX_MODELS, sizeof *sr);
    int ns = 0;
    for (int m = 0; m < nr; m++)
        for (int d = 0; d < 2; d++) {
            series *q = &sr[ns++];
            memset(q, 0, sizeof *q);
            snprintf(q->label, sizeof q->label, "%s: %s", reps[m].name, d ? "tangential" : "radial");
            q->n = s->land_points;
            for (int p = 0; p < q->n; p++) {
                q->x[p] = -s->land_radius + 2.0 * s->land_radius * p / (q->n - 1);
                q->y[p] = d ? reps[m].tangential[p] : reps[m].radial[p];
            }
            q->color = m;
            q->dashed = d;
        }
    char path[1024];
    snprintf(path, sizeof path, "%s-landscape.svg", s->out);
    write_svg(path, "Loss along radial (solid) and tangential (dashed) directions",
              "t (L2 step along the direction)", "mean cross-entropy", sr, ns, 0);
    free(sr);
}

/* ======================================================================== */
/* Results cache (--cache DIR)                                                */
/* ======================================================================== */

/* With --cache DIR, each model's finished results go to DIR/NAME-KEY.eval,
 * so that a long evaluation, interrupted, resumes after its last finished
 * model (rerun the same command: the report is the same). KEY is a 64-bit
 * FNV-1a digest of the record's settings line, which names everything its
 * numbers depend on: the test images and labels (by digest), the attack
 * suite and its parameters, batch and threads, the library version, the
 * transfer sources' and the model's checkpoint bytes (by digest). A record
 * is used only when its settings line equals the run's; one that does not
 * parse (truncated, edited, hostile) is reported on stderr and the model
 * is attacked again. A record is written to a temporary file, fsync'd and
 * renamed, so an interrupted run never leaves half of one. Format, one
 * item per line, numbers as %.17g (an exact round trip), masks as n
 * characters 0 or 1 (sample i: robust, or classified correctly):
 *   deepdefense-eval 1
 *   settings LINE
 *   range 01|pm1|std
 *   clean ACCURACY MASK
 *   row ATTACK EPS ACCURACY SECONDS MASK        one per robust_row, in order
 *   min-norm ATTACK N CORRECT FOOLED MEDIAN_L2 MEDIAN_L1 MEDIAN_LINF
 *            MEAN_L2 MEAN_L1 MEAN_LINF SECONDS  one per minimum-norm attack
 *   landscape RADIAL... TANGENTIAL...           land_points each, if any
 *   end
 * ATTACK is the index into the run's attack list (which the settings line
 * fixes). */

#define FNV_OFFSET 0xcbf29ce484222325ULL

static uint64_t fnv1a(uint64_t h, const void *data, size_t size) {
    const unsigned char *b = data;
    for (size_t i = 0; i < size; i++) h = (h ^ b[i]) * 0x100000001b3ULL;
    return h;
}

/* Digest of a file's bytes (a checkpoint). */
static uint64_t file_digest_or_die(const char *path) {
    FILE *f = fopen(path, "rb");
    if (f == NULL) die("cannot read %s: %s", path, strerror(errno));
    unsigned char buf[1 << 16];
    uint64_t h = FNV_OFFSET;
    size_t got;
    while ((got = fread(buf, 1, sizeof buf, f)) > 0) h = fnv1a(h, buf, got);
    int bad = ferror(f);
    fclose(f);
    if (bad) die("error reading %s", path);
    return h;
}

/* The settings line shared by every model of this run (malloc'd): all but
 * the model's own checkpoint digest, which cache_file() appends. */
static char *cache_settings_or_die(const settings *s, const float *x, const int32_t *y, int n, size_t per) {
    char *line = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&line, &len);
    if (f == NULL) die("out of memory");
    uint64_t data = fnv1a(fnv1a(FNV_OFFSET, x, (size_t)n * per * sizeof *x), y, (size_t)n * sizeof *y);
    fprintf(f, "library %s images %d per %zu data %016llx batch %d threads %d attacks", dd_version_string(),
            n, per, (unsigned long long)data, s->batch, s->threads);
    for (int a = 0; a < s->nattacks; a++) {
        const attack_spec *at = &s->attacks[a];
        if (at->transfer < 0) {
            fprintf(f, " %s", at->name);
        } else {
            const char *path = strchr(s->transfer[at->transfer], '=') + 1;
            fprintf(f, " %s:%016llx", at->name, (unsigned long long)file_digest_or_die(path));
        }
    }
    fprintf(f, " eps");
    for (int e = 0; e < s->n_linf; e++) fprintf(f, "%c%.17g", e ? ',' : ' ', s->eps_linf[e]);
    fprintf(f, " eps-l2");
    for (int e = 0; e < s->n_l2; e++) fprintf(f, "%c%.17g", e ? ',' : ' ', s->eps_l2[e]);
    fprintf(f, " queries %d ead-steps %d cw-steps %d pgd-steps %d transfer-eps %.17g", s->queries,
            s->ead_steps, s->cw_steps, s->pgd_steps, s->transfer_eps);
    fprintf(f, " landscape %d %d %d %.17g", s->land_images, s->land_points, s->land_dirs, s->land_radius);
    if (fclose(f) != 0 || line == NULL) die("out of memory");
    return line;
}

/* The record of one model: its settings line (the run's plus the
 * checkpoint's digest, malloc'd into *line) and its file DIR/NAME-KEY.eval. */
static void cache_file(const char *dir, const char *run_line, const model_report *rep, char **line,
                       char *file, size_t size) {
    size_t len = strlen(run_line) + 32;
    *line = malloc_or_die(len, 1);
    snprintf(*line, len, "%s model %016llx", run_line, (unsigned long long)file_digest_or_die(rep->path));
    uint64_t key = fnv1a(FNV_OFFSET, *line, strlen(*line));
    if ((size_t)snprintf(file, size, "%s/%s-%016llx.eval", dir, rep->name, (unsigned long long)key) >= size)
        die("--cache %s: path too long", dir);
}

/* Frees a report's results and forgets them (name, path and range stay). */
static void report_clear(model_report *r) {
    free(r->clean_mask);
    r->clean_mask = NULL;
    for (int i = 0; i < r->nrows; i++) free(r->rows[i].robust);
    r->nrows = 0;
    r->nmn = 0;
    r->clean = 0.0;
}

static void put_mask(FILE *f, const unsigned char *mask, int n) {
    for (int i = 0; i < n; i++) fputc(mask[i] ? '1' : '0', f);
    fputc('\n', f);
}

/* Writes rep's record; a failure is a warning (the report is still
 * written, only a rerun would attack this model again). */
static void cache_save(const char *file, const char *line, const settings *s, const model_report *r, int n) {
    char tmp[1300]; /* file (< 1200) + ".tmp." + a pid */
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", file, (long)getpid());
    FILE *f = fopen(tmp, "w");
    if (f == NULL) {
        fprintf(stderr, "warning: cannot write %s: %s (results not cached)\n", tmp, strerror(errno));
        return;
    }
    fprintf(f, "deepdefense-eval 1\nsettings %s\nrange %s\nclean %.17g ", line, r->range, r->clean);
    put_mask(f, r->clean_mask, n);
    for (int i = 0; i < r->nrows; i++) {
        const robust_row *w = &r->rows[i];
        fprintf(f, "row %d %.17g %.17g %.17g ", w->attack, w->eps, w->acc, w->seconds);
        put_mask(f, w->robust, n);
    }
    for (int j = 0; j < r->nmn; j++) {
        const min_norm_row *m = &r->mn[j];
        fprintf(f, "min-norm %d %d %d %d", m->attack, m->n, m->correct, m->fooled);
        for (int k = 0; k < 3; k++) fprintf(f, " %.17g", m->median[k]);
        for (int k = 0; k < 3; k++) fprintf(f, " %.17g", m->mean[k]);
        fprintf(f, " %.17g\n", m->seconds);
    }
    if (s->land_images > 0) {
        fprintf(f, "landscape");
        for (int p = 0; p < s->land_points; p++) fprintf(f, " %.17g", r->radial[p]);
        for (int p = 0; p < s->land_points; p++) fprintf(f, " %.17g", r->tangential[p]);
        fputc('\n', f);
    }
    fprintf(f, "end\n");
    int bad = fflush(f) != 0 || ferror(f) || fsync(fileno(f)) != 0;
    bad |= fclose(f) != 0;
    if (bad || rename(tmp, file) != 0) {
        fprintf(stderr, "warning: cannot write %s: %s (results not cached)\n", file, strerror(errno));
        unlink(tmp);
    }
}

/* ---- reading a record: every field checked, nothing trusted ---- */

typedef struct cache_reader {
    FILE *f;
    char *buf; /* the current line (getline's buffer) */
    size_t cap;
    char *save; /* strtok_r state */
    int lineno;
    const char *why; /* the first problem found */
} cache_reader;

/* Reads the next line and returns its first word (NULL at the end). */
static const char *cache_next_line(cache_reader *c) {
    if (getline(&c->buf, &c->cap, c->f) < 0) return NULL;
    c->lineno++;
    return strtok_r(c->buf, " \n", &c->save);
}

static const char *cache_word(cache_reader *c) { return strtok_r(NULL, " \n", &c->save); }

static int cache_double(cache_reader *c, double lo, double hi, double *v) {
    const char *w = cache_word(c);
    char *end = NULL;
    if (w != NULL) *v = strtod(w, &end);
    if (w == NULL || *end != '\0' || !(*v >= lo && *v <= hi)) { /* NaN fails here */
        c->why = "a number is missing or out of range";
        return 0;
    }
    return 1;
}

/* A statistic that may be NaN (a median over no samples). */
static int cache_stat(cache_reader *c, double *v) {
    const char *w = cache_word(c);
    char *end = NULL;
    if (w != NULL) *v = strtod(w, &end);
    if (w == NULL || *end != '\0' || !(isnan(*v) || (*v >= 0 && *v < INFINITY))) {
        c->why = "a statistic is missing or not a norm";
        return 0;
    }
    return 1;
}

static int cache_int(cache_reader *c, int lo, int hi, int *v) {
    double d = 0.0;
    if (!cache_double(c, lo, hi, &d) || d != floor(d)) {
        c->why = "an integer is missing or out of range";
        return 0;
    }
    *v = (int)d;
    return 1;
}

/* A mask of exactly n characters 0/1 into mask (n bytes). */
static int cache_mask(cache_reader *c, int n, unsigned char *mask) {
    const char *w = cache_word(c);
    if (w == NULL || strlen(w) != (size_t)n || strspn(w, "01") != (size_t)n) {
        c->why = "a mask is missing or not the run's length";
        return 0;
    }
    for (int i = 0; i < n; i++) mask[i] = w[i] == '1';
    return 1;
}

/* The next row the evaluation loop of main() makes, after `*ai`/`*e`: the
 * (attack, eps) sequence a complete record must have. 0 when none is left. */
static int next_expected_row(const settings *s, int *ai, int *e, int *attack, double *eps) {
    for (; *ai < s->nattacks; (*ai)++, *e = 0) {
        const attack_spec *a = &s->attacks[*ai];
        int has_eps = !a->min_norm || a->norm == DD_NORM_L2 || a->norm == DD_NORM_LINF;
        int ne = a->transfer >= 0 ? 1 : !has_eps ? 0 : a->norm == DD_NORM_L2 ? s->n_l2 : s->n_linf;
        if (*e < ne) {
            *attack = *ai;
            *eps = a->transfer >= 0        ? s->transfer_eps
                   : a->norm == DD_NORM_L2 ? s->eps_l2[*e]
                                           : s->eps_linf[*e];
            (*e)++;
            return 1;
        }
    }
    return 0;
}

/* Parses the record body after its settings line into rep. */
static int cache_parse(cache_reader *c, const settings *s, int n, model_report *rep) {
    const char *w = cache_next_line(c);
    const char *range = w && strcmp(w, "range") == 0 ? cache_word(c) : NULL;
    if (range == NULL ||
        (strcmp(range, "01") != 0 && strcmp(range, "pm1") != 0 && strcmp(range, "std") != 0)) {
        c->why = "expected 'range 01|pm1|std'";
        return 0;
    }
    snprintf(rep->range, sizeof rep->range, "%s", range);
    w = cache_next_line(c);
    if (w == NULL || strcmp(w, "clean") != 0) {
        c->why = "expected the clean line";
        return 0;
    }
    rep->clean_mask = malloc_or_die((size_t)n, 1);
    if (!cache_double(c, 0.0, 1.0, &rep->clean) || !cache_mask(c, n, rep->clean_mask)) return 0;
    int ai = 0, e = 0, attack = 0;
    double eps = 0.0;
    w = cache_next_line(c);
    while (next_expected_row(s, &ai, &e, &attack, &eps)) {
        if (w == NULL || strcmp(w, "row") != 0) {
            c->why = "a robust-accuracy row is missing";
            return 0;
        }
        robust_row *r = &rep->rows[rep->nrows];
        r->robust = malloc_or_die((size_t)n, 1);
        rep->nrows++;
        if (!cache_int(c, 0, s->nattacks - 1, &r->attack) || !cache_double(c, 0.0, 1e6, &r->eps) ||
            !cache_double(c, 0.0, 1.0, &r->acc) || !cache_double(c, 0.0, 1e12, &r->seconds) ||
            !cache_mask(c, n, r->robust))
            return 0;
        if (r->attack != attack || r->eps != eps) {
            c->why = "a row is not the attack and eps the run makes next";
            return 0;
        }
        w = cache_next_line(c);
    }
    for (int a = 0; a < s->nattacks; a++) {
        if (!s->attacks[a].min_norm) continue;
        min_norm_row *m = &rep->mn[rep->nmn++];
        if (w == NULL || strcmp(w, "min-norm") != 0) {
            c->why = "a minimum-norm line is missing";
            return 0;
        }
        if (!cache_int(c, a, a, &m->attack) || !cache_int(c, n, n, &m->n) ||
            !cache_int(c, 0, n, &m->correct) || !cache_int(c, 0, m->correct, &m->fooled))
            return 0;
        for (int k = 0; k < 3; k++)
            if (!cache_stat(c, &m->median[k])) return 0;
        for (int k = 0; k < 3; k++)
            if (!cache_stat(c, &m->mean[k])) return 0;
        if (!cache_double(c, 0.0, 1e12, &m->seconds)) return 0;
        w = cache_next_line(c);
    }
    if (s->land_images > 0) {
        if (w == NULL || strcmp(w, "landscape") != 0) {
            c->why = "the landscape line is missing";
            return 0;
        }
        for (int p = 0; p < s->land_points; p++)
            if (!cache_stat(c, &rep->radial[p])) return 0;
        for (int p = 0; p < s->land_points; p++)
            if (!cache_stat(c, &rep->tangential[p])) return 0;
        w = cache_next_line(c);
    }
    if (w == NULL || strcmp(w, "end") != 0 || cache_word(c) != NULL || cache_next_line(c) != NULL) {
        c->why = "expected 'end' as the last line";
        return 0;
    }
    return 1;
}

/* Fills rep from its record: 1 on success; 0 when there is none or it
 * does not hold (said on stderr), rep's results then left empty. */
static int cache_load(const char *file, const char *line, const settings *s, int n, model_report *rep) {
    cache_reader c = {.f = fopen(file, "r")};
    if (c.f == NULL) return 0;
    const char *w = cache_next_line(&c);
    const char *v = w && strcmp(w, "deepdefense-eval") == 0 ? cache_word(&c) : NULL;
    int ok = v != NULL && strcmp(v, "1") == 0 && cache_word(&c) == NULL;
    if (!ok) c.why = "not a deepdefense-eval 1 record";
    if (ok) {
        ssize_t len = getline(&c.buf, &c.cap, c.f);
        c.lineno++;
        size_t want = strlen(line);
        ok = len == (ssize_t)(want + 10) && strncmp(c.buf, "settings ", 9) == 0 &&
             strncmp(c.buf + 9, line, want) == 0 && c.buf[9 + want] == '\n';
        if (!ok) c.why = "its settings line is not this run's";
    }
    ok = ok && cache_parse(&c, s, n, rep);
    if (!ok) {
        fprintf(stderr, "warning: %s, line %d: %s; attacking the model again\n", file, c.lineno, c.why);
        report_clear(rep);
    }
    free(c.buf);
    fclose(c.f);
    return ok;
}

/* Makes DIR if needed; fails before any attack runs if it is not writable. */
static void cache_dir_or_die(const char *dir) {
    if (mkdir(dir, 0777) != 0 && errno != EEXIST)
        die("--cache %s: cannot create it: %s", dir, strerror(errno));
    if (access(dir, W_OK | X_OK) != 0) die("--cache %s: cannot write to it: %s", dir, strerror(errno));
}

/* ======================================================================== */
/* main                                                                       */
/* ======================================================================== */

int main(int argc, char **argv) {
    settings s;
    parse_args(argc, argv, &s);
    if (!can_write_next_to(s.out)) /* before any attack runs */
        die("cannot write the report next to --out %s: %s", s.out, strerror(errno));
    if (s.cache != NULL) cache_dir_or_die(s.cache);

    /* ---- the test images ---- */
    dd_dataset *test = NULL;
    const char *source;
    if (s.synthetic) {
        /* train_cifar --synthetic's test set (seed 1 + 7777). */
        test = synthetic_dataset_or_die(s.n, 3, 16, 16, 10, 1 + 7777);
        source = "synthetic data";
    } else {
        source = s.data != NULL ? s.data : DEFAULT_DATA_DIR;
        if (s.data == NULL && access(DEFAULT_DATA_DIR, R_OK) != 0)
            die("no --data given and %s does not exist (apt-get install dataset-fashion-mnist)",
                DEFAULT_DATA_DIR);
        test = open_dataset_or_die(source, DD_SPLIT_TEST, s.n);
    }
    int n = 0, C = 0, H = 0, W = 0, K = 0;
    check_or_die(dd_dataset_info(test, &n, &C, &H, &W, &K), "dd_dataset_info");
    size_t per = (size_t)C * H * W;
    float *x = malloc_or_die((size_t)n * per, sizeof *x);
    int32_t *y = malloc_or_die((size_t)n, sizeof *y);
    check_or_die(dd_dataset_get_range(test, 0, n, x, y), "dd_dataset_get_range");
    float *xa = malloc_or_die((size_t)s.batch * per, sizeof *xa);
    if (s.land_images > n) s.land_images = n;

    float *tadv[MAX_TRANSFER] = {NULL};
    int have_transfer = 0; /* made before the first model that is not cached */
    char *run_line = s.cache != NULL ? cache_settings_or_die(&s, x, y, n, per) : NULL;
    model_report *reps = calloc((size_t)s.nmodels, sizeof *reps);
    if (reps == NULL) die("out of memory");
    for (int mi = 0; mi < s.nmodels; mi++) {
        model_report *rep = &reps[mi];
        /* NAME=PATH names the column; otherwise the file's stem does */
        rep->path = s.models[mi];
        const char *eq = strchr(rep->path, '=');
        if (eq != NULL && eq > rep->path && (size_t)(eq - rep->path) < sizeof rep->name &&
            memchr(rep->path, '/', (size_t)(eq - rep->path)) == NULL) { /* not "dir/a=b" */
            snprintf(rep->name, sizeof rep->name, "%.*s", (int)(eq - rep->path), rep->path);
            rep->path = eq + 1;
        } else {
            const char *base = strrchr(rep->path, '/');
            snprintf(rep->name, sizeof rep->name, "%s", base ? base + 1 : rep->path);
            char *dot = strstr(rep->name, ".safetensors");
            if (dot != NULL) *dot = '\0';
        }
        char *line = NULL, cfile[1200];
        if (s.cache != NULL) {
            cache_file(s.cache, run_line, rep, &line, cfile, sizeof cfile);
            if (cache_load(cfile, line, &s, n, rep)) {
                check_range_or_die(&s, rep);
                printf("== %s (input range %s): results of %s\nclean accuracy %.2f%%\n", rep->path,
                       rep->range, cfile, 100.0 * rep->clean);
                free(line);
                continue;
            }
        }
        if (!have_transfer) {
            make_transfer_or_die(&s, x, y, n, per, tadv);
            have_transfer = 1;
        }

        dd_model_options mo;
        dd_model_options_init(&mo);
        mo.num_threads = s.threads;
        dd_model *m = NULL;
        check_or_die(dd_model_load_ex(rep->path, &mo, s.batch, &m), rep->path);
        int mc = 0, mh = 0, mw = 0, mk = 0;
        check_or_die(dd_model_input_shape(m, &mc, &mh, &mw), "dd_model_input_shape");
        check_or_die(dd_model_num_classes(m, &mk), "dd_model_num_classes");
        if (mc != C || mh != H || mw != W || mk < K)
            die("%s takes %dx%dx%d images and %d classes; the test set has %dx%dx%d and %d", rep->path, mc,
                mh, mw, mk, C, H, W, K);
        /* Attacks need no GFA tangent buffers; hooks only cost memory here. */
        check_or_die(dd_gfa_clear(m), "dd_gfa_clear");
        float origin[64];
        if (C > 64) die("at most 64 channels");
        input_range_of(m, C, rep->range, sizeof rep->range, origin);
        check_range_or_die(&s, rep);

        printf("== %s (input range %s)\n", rep->path, rep->range);
        rep->clean_mask = malloc_or_die((size_t)n, 1);
        clean_mask_or_die(m, x, y, n, per, mk, s.batch, rep->clean_mask);
        long nc = 0;
        for (int i = 0; i < n; i++) nc += rep->clean_mask[i];
        rep->clean = (double)nc / n;
        printf("clean accuracy %.2f%%\n", 100.0 * rep->clean);
        for (int ai = 0; ai < s.nattacks; ai++) {
            const attack_spec *a = &s.attacks[ai];
            if (a->transfer >= 0) {
                /* robust: correct on the clean image and on the source's adversarial */
                robust_row *r = &rep->rows[rep->nrows++];
                r->attack = ai;
                r->eps = s.transfer_eps;
                r->robust = malloc_or_die((size_t)n, 1);
                clean_mask_or_die(m, tadv[a->transfer], y, n, per, mk, s.batch, r->robust);
                long k = 0;
                for (int i = 0; i < n; i++) {
                    r->robust[i] &= rep->clean_mask[i];
                    k += r->robust[i];
                }
                r->acc = (double)k / n;
                r->seconds = 0.0;
                printf("%-16s eps %.4g robust accuracy %6.2f%%\n", a->name, s.transfer_eps, 100.0 * r->acc);
                continue;
            }
            if (a->min_norm) {
                min_norm_or_die(&s, m, ai, x, y, n, per, xa, rep);
                const min_norm_row *r = &rep->mn[rep->nmn - 1];
                printf("%-16s fooled %d, median L2 %.4g, L1 %.4g, Linf %.4g  (%.1f s)\n", a->name, r->fooled,
                       r->median[0], r->median[1], r->median[2], r->seconds);
                continue;
            }
            const double *eps = a->norm == DD_NORM_L2 ? s.eps_l2 : s.eps_linf;
            int ne = a->norm == DD_NORM_L2 ? s.n_l2 : s.n_linf;
            for (int e = 0; e < ne; e++) {
                double t0 = now_seconds();
                robust_row *r = &rep->rows[rep->nrows++];
                r->attack = ai;
                r->eps = eps[e];
                r->robust = malloc_or_die((size_t)n, 1);
                r->acc = budgeted_or_die(&s, m, a, eps[e], x, y, n, per, xa, r->robust);
                r->seconds = now_seconds() - t0;
                char et[32];
                printf("%-16s eps %-8s robust accuracy %6.2f%%  (%.1f s)\n", a->name,
                       eps_text(a->norm, eps[e], et, sizeof et), 100.0 * r->acc, r->seconds);
            }
        }
        if (s.land_images > 0) landscape_or_die(&s, m, x, y, per, mk, origin, C, rep);
        dd_model_destroy(m);
        if (s.cache != NULL) cache_save(cfile, line, &s, rep, n);
        free(line);
        fflush(stdout);
    }

    write_markdown(&s, reps, s.nmodels, n, source);
    write_json(&s, reps, s.nmodels, n, source);
    write_csv(&s, reps, s.nmodels);
    write_accuracy_svg(&s, reps, s.nmodels, DD_NORM_LINF);
    write_accuracy_svg(&s, reps, s.nmodels, DD_NORM_L2);
    if (s.land_images > 0) write_landscape_svg(&s, reps, s.nmodels);

    for (int mi = 0; mi < s.nmodels; mi++) report_clear(&reps[mi]);
    free(run_line);
    for (int t = 0; t < s.ntransfer; t++) free(tadv[t]);
    free(reps);
    free(x);
    free(y);
    free(xa);
    dd_dataset_destroy(test);
    return 0;
}
