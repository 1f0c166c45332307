/* examples/train_cifar.c -- train a robust image classifier, watch it train,
 * and measure how robust it is.
 *
 *   train_cifar                                   Fashion-MNIST, GFA, defaults
 *   train_cifar --data DIR --arch cnn-cw --defense pgd-at+gfa --epochs 10
 *   train_cifar --resume model.safetensors        continue an interrupted run
 *
 * DIR holds CIFAR-10 binary batches (data_batch_1..5.bin, test_batch.bin) or
 * IDX files (MNIST/Fashion-MNIST, plain or .gz); without --data the program
 * uses Debian's dataset-fashion-mnist (/usr/share/datasets/fashion-mnist).
 * Defenses: none (plain training), pgd-at (Madry PGD adversarial training),
 * trades (TRADES), and gfa (Gradient-Feature Alignment hooks on the inputs of
 * every conv and linear layer), which combines with the other two
 * ("pgd-at+gfa"). A progress line shows epoch, batch, images/s, ETA, loss,
 * accuracy and the GFA alignment on a terminal; plain log lines otherwise.
 * After every epoch the model is saved atomically to --out, and a small
 * sidecar "<out>.state" records the epoch, the optimizer's moments and the
 * training configuration, so that --resume continues with exactly the
 * weights an uninterrupted run would have had (same machine and --threads):
 * the batch order and augmentation are functions of (seed, epoch), the
 * learning rate a function of the step, and the PGD random starts are
 * seeded per epoch. The checkpoint and its state are committed as one (an
 * interrupted save leaves the previous pair, or the new checkpoint with
 * "<out>.state.next", which --resume takes). --resume with a different
 * --epochs lengthens or shortens the run: the learning-rate schedule is
 * then the one of the new length from the first step, so the rate at the
 * resumed step changes (a note says from what to what; a finished cosine
 * run trained further starts a new decay). The run ends with clean test
 * accuracy and a short robustness check: FGSM and PGD-10 at eps 8/255 on
 * --eval-n test images.
 */
#include "common.h"

#include <stddef.h>
#include <sys/stat.h>
#include <unistd.h>

#define DEFAULT_DATA_DIR "/usr/share/datasets/fashion-mnist"
#define STATE_MAGIC "deepdefense-train-state 1"

/* ======================================================================== */
/* Configuration and command line                                             */
/* ======================================================================== */

typedef struct config {
    char data[1024]; /* dataset directory; "" = DEFAULT_DATA_DIR */
    int synthetic;   /* > 0: this many synthetic training samples instead of files */
    char arch[32];   /* "" = cnn-cw for 3-channel data, mlp otherwise */
    char defense[32];
    double gfa_lambda;
    char gfa_mode[16];
    char gfa_hooks[512]; /* dd_gfa_hook_spec text: first|deep|all|NAME[:LAMBDA],... */
    char loss[8];        /* ce|mse */
    char input_range[8]; /* std|01|pm1: what the first layer sees */
    int epochs;          /* 0 = by data: 3 for 1-channel data, 10 otherwise */
    int batch;
    double lr; /* 0 = by optimizer: SGD 0.01, Adam/AdamW 1e-3 */
    char schedule[16];
    char optimizer[16];  /* "" = adam for 1-channel data, sgd otherwise */
    double weight_decay; /* < 0 = the optimizer's default */
    double warmup;       /* cosine: fraction of the steps spent warming up */
    long seed;
    int threads; /* 0 = OpenMP's default */
    char out[1024];
    char resume[1024];
    long train_limit, test_limit;
    int eval_n;
    double eval_eps;
    int augment;      /* -1 auto (on for 3-channel data), 0 off, 1 on */
    double train_eps; /* PGD-AT / TRADES budget (Linf) */
    int train_steps;
    double train_step_size; /* 0 = 2.5 * eps / steps (Madry) */
    int eps_ramp;           /* PGD-AT/TRADES: epochs over which eps grows linearly to train_eps */
    char metrics[1024];     /* per-epoch CSV log ("" = none) */
    double trades_beta;
    int stop_after; /* stop after this many epochs (0 = run to the end) */
    int log_every;  /* plain log: batches between lines (0 = about 10 per epoch) */
    int progress;   /* -1 auto, 0 plain lines, 1 progress bar */
} config;

typedef enum { T_STR, T_INT, T_LONG, T_DBL } opt_type;

typedef struct opt_def {
    const char *name;
    opt_type type;
    size_t off;
    size_t size; /* T_STR: buffer size */
    int saved;   /* 1: part of the training configuration kept in the sidecar */
    double lo, hi;
    const char *help;
} opt_def;

#define O(field) offsetof(config, field), sizeof(((config *)0)->field)
static const opt_def opt_table[] = {
    {"data", T_STR, O(data), 1, 0, 0, "DIR: CIFAR-10 binary or IDX directory (default " DEFAULT_DATA_DIR ")"},
    {"synthetic", T_INT, O(synthetic), 1, 0, 1e7,
     "N: N synthetic 3x16x16 training images instead of files (tests)"},
    {"arch", T_STR, O(arch), 1, 0, 0,
     "cnn-cw|resnet20|preact-resnet18|mlp (default cnn-cw; mlp for 1-channel data)"},
    {"defense", T_STR, O(defense), 1, 0, 0, "none|pgd-at|trades|gfa|pgd-at+gfa|trades+gfa (default gfa)"},
    {"gfa-lambda", T_DBL, O(gfa_lambda), 1, 0, 1e6, "X: weight of every GFA hook (default 0.02)"},
    {"gfa-mode", T_STR, O(gfa_mode), 1, 0, 0, "sin2|cos|tangent (default sin2)"},
    {"gfa-hooks", T_STR, O(gfa_hooks), 1, 0, 0,
     "SPEC: first|deep|all, or NAME[:LAMBDA],... (default deep; see gfa.h)"},
    {"loss", T_STR, O(loss), 1, 0, 0,
     "ce|mse: cross-entropy, or MSE of softmax probabilities vs one-hot (default ce)"},
    {"input-range", T_STR, O(input_range), 1, 0, 0,
     "std|01|pm1: first layer sees CIFAR-standardised, [0,1] or 2x-1 pixels (default std)"},
    {"epochs", T_INT, O(epochs), 1, 1, 100000, "N (default 3 for 1-channel data, 10 otherwise)"},
    {"batch", T_INT, O(batch), 1, 1, 65536, "N: batch size (default 128)"},
    {"lr", T_DBL, O(lr), 1, 0, 1e3, "X: base learning rate (default SGD 0.01, Adam/AdamW 1e-3)"},
    {"schedule", T_STR, O(schedule), 1, 0, 0, "cosine|step|onecycle|constant (default cosine)"},
    {"optimizer", T_STR, O(optimizer), 1, 0, 0, "sgd|adam|adamw (default sgd; adam for 1-channel data)"},
    {"weight-decay", T_DBL, O(weight_decay), 1, 0, 1, "X (default: SGD 5e-4, Adam 0, AdamW 1e-2)"},
    {"warmup", T_DBL, O(warmup), 1, 0, 1, "F: cosine warm-up, fraction of all steps (default 0)"},
    {"seed", T_LONG, O(seed), 1, 0, 2147483647.0,
     "N: seed of initialisation, shuffling, augmentation, attacks (default 1)"},
    {"threads", T_INT, O(threads), 1, 0, 1024, "N: OpenMP threads (default: OpenMP's default)"},
    {"out", T_STR, O(out), 0, 0, 0, "PATH: checkpoint written every epoch (default model.safetensors)"},
    {"resume", T_STR, O(resume), 0, 0, 0,
     "PATH: continue the run saved at PATH (and PATH.state); with another --epochs, "
     "the learning-rate schedule is recomputed for the new length"},
    {"train-limit", T_LONG, O(train_limit), 1, 0, 2147483647.0,
     "N: train on the first N images only (0 or more than the data: all)"},
    {"test-limit", T_LONG, O(test_limit), 1, 0, 2147483647.0,
     "N: test on the first N images only (0 or more than the data: all)"},
    {"eval-n", T_INT, O(eval_n), 1, 0, 1e7,
     "N: test images for the robustness check (default 1000; 0 = skip)"},
    {"eval-eps", T_DBL, O(eval_eps), 0, 0, 1, "X: Linf budget of the robustness check (default 8/255)"},
    {"train-eps", T_DBL, O(train_eps), 1, 0, 1, "X: PGD-AT/TRADES Linf budget (default 8/255)"},
    {"train-steps", T_INT, O(train_steps), 1, 1, 1000, "N: PGD-AT/TRADES attack steps (default 10)"},
    {"train-step-size", T_DBL, O(train_step_size), 1, 0, 1,
     "X: attack step (default 2.5*eps/steps; TRADES 2.26*eps/steps)"},
    {"trades-beta", T_DBL, O(trades_beta), 1, 0, 1e3, "X: TRADES KL weight (default 6)"},
    {"eps-ramp", T_INT, O(eps_ramp), 1, 0, 100000,
     "N: PGD-AT/TRADES eps grows linearly over the first N epochs (default 0: none)"},
    {"metrics", T_STR, O(metrics), 1, 0, 0,
     "PATH: append one CSV line per epoch (loss, accuracy, alignment per hook)"},
    {"stop-after", T_INT, O(stop_after), 0, 1, 100000,
     "N: stop after epoch N as if interrupted (for --resume)"},
    {"log-every", T_INT, O(log_every), 0, 1, 1e9,
     "N: batches between plain log lines (default ~10 per epoch)"},
};
#undef O
#define NUM_OPTS ((int)(sizeof opt_table / sizeof opt_table[0]))

static void config_defaults(config *c) {
    memset(c, 0, sizeof *c);
    snprintf(c->defense, sizeof c->defense, "gfa");
    c->gfa_lambda = 0.02;
    snprintf(c->gfa_mode, sizeof c->gfa_mode, "sin2");
    snprintf(c->gfa_hooks, sizeof c->gfa_hooks, "deep");
    snprintf(c->loss, sizeof c->loss, "ce");
    snprintf(c->input_range, sizeof c->input_range, "std");
    c->batch = 128;
    snprintf(c->schedule, sizeof c->schedule, "cosine");
    c->weight_decay = -1.0;
    c->seed = 1;
    snprintf(c->out, sizeof c->out, "model.safetensors");
    c->eval_n = 1000;
    c->eval_eps = 8.0 / 255.0;
    c->augment = -1;
    c->train_eps = 8.0 / 255.0;
    c->train_steps = 10;
    c->trades_beta = 6.0;
    c->progress = -1;
}

static void usage(FILE *f) {
    fprintf(f, "usage: train_cifar [options]\n"
               "Trains a classifier with GFA / PGD-AT / TRADES and reports its robustness.\n\n");
    for (int i = 0; i < NUM_OPTS; i++) fprintf(f, "  --%-16s %s\n", opt_table[i].name, opt_table[i].help);
    fprintf(f, "  --%-16s %s\n", "augment",
            "random crop (4 px) + horizontal flip (default: on for 3-channel image files)");
    fprintf(f, "  --%-16s %s\n", "no-augment", "no augmentation");
    fprintf(f, "  --%-16s %s\n", "progress", "force the progress bar");
    fprintf(f, "  --%-16s %s\n", "no-progress", "force plain log lines");
    fprintf(f, "  --%-16s %s\n", "help", "this text");
}

/* Sets option d from text s (validated). */
static void set_option(config *c, const opt_def *d, const char *s) {
    char *p = (char *)c + d->off;
    char flag[64];
    snprintf(flag, sizeof flag, "--%s", d->name);
    switch (d->type) {
    case T_STR:
        if (strlen(s) >= d->size) die("%s: value too long", flag);
        memcpy(p, s, strlen(s) + 1);
        break;
    case T_INT: {
        int v = (int)parse_long_or_die(flag, s, (long)d->lo, (long)d->hi);
        memcpy(p, &v, sizeof v);
        break;
    }
    case T_LONG: {
        long v = parse_long_or_die(flag, s, (long)d->lo, (long)d->hi);
        memcpy(p, &v, sizeof v);
        break;
    }
    case T_DBL: {
        double v = parse_double_or_die(flag, s, d->lo, d->hi);
        memcpy(p, &v, sizeof v);
        break;
    }
    }
}

/* Text of option d's value (for the sidecar and the run header). Doubles
 * use %.17g so that the value read back is the same double. */
static const char *option_text(const config *c, const opt_def *d, char *buf, size_t size) {
    const char *p = (const char *)c + d->off;
    int iv;
    long lv;
    double dv;
    switch (d->type) {
    case T_STR:
        snprintf(buf, size, "%s", p);
        break;
    case T_INT:
        memcpy(&iv, p, sizeof iv);
        snprintf(buf, size, "%d", iv);
        break;
    case T_LONG:
        memcpy(&lv, p, sizeof lv);
        snprintf(buf, size, "%ld", lv);
        break;
    case T_DBL:
        memcpy(&dv, p, sizeof dv);
        snprintf(buf, size, "%.17g", dv);
        break;
    }
    return buf;
}

/* Parses argv into c; given[i] = 1 for each option of the table on the
 * command line. */
static void parse_args(int argc, char **argv, config *c, int *given) {
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            exit(0);
        }
        if (strcmp(a, "--augment") == 0) {
            c->augment = 1;
            continue;
        }
        if (strcmp(a, "--no-augment") == 0) {
            c->augment = 0;
            continue;
        }
        if (strcmp(a, "--progress") == 0) {
            c->progress = 1;
            continue;
        }
        if (strcmp(a, "--no-progress") == 0) {
            c->progress = 0;
            continue;
        }
        if (strncmp(a, "--", 2) != 0) die("unexpected argument '%s' (see --help)", a);
        const char *name = a + 2, *eq = strchr(name, '=');
        size_t len = eq ? (size_t)(eq - name) : strlen(name);
        int k = -1;
        for (int j = 0; j < NUM_OPTS; j++)
            if (strlen(opt_table[j].name) == len && strncmp(opt_table[j].name, name, len) == 0) k = j;
        if (k < 0) die("unknown option '%s' (see --help)", a);
        const char *val = eq ? eq + 1 : (i + 1 < argc ? argv[++i] : NULL);
        if (val == NULL) die("%s needs a value", a);
        set_option(c, &opt_table[k], val);
        given[k] = 1;
    }
}

static int given_option(const int *given, const char *name) {
    for (int i = 0; i < NUM_OPTS; i++)
        if (strcmp(opt_table[i].name, name) == 0) return given[i];
    return 0;
}

typedef enum { BASE_NONE, BASE_PGD, BASE_TRADES } base_defense;

typedef struct plan {
    base_defense base;
    int gfa;
    dd_gfa_mode gfa_mode;
    dd_loss_kind loss;
    dd_optimizer_kind optim;
    dd_schedule_kind sched;
} plan;

/* Fills the data-dependent defaults and checks the names. */
static plan resolve(config *c, int channels) {
    plan p;
    memset(&p, 0, sizeof p);
    if (c->arch[0] == '\0') snprintf(c->arch, sizeof c->arch, "%s", channels == 3 ? "cnn-cw" : "mlp");
    if (c->optimizer[0] == '\0')
        snprintf(c->optimizer, sizeof c->optimizer, "%s", channels == 3 ? "sgd" : "adam");
    if (c->epochs == 0) c->epochs = channels == 3 ? 10 : 3;
    if (c->augment < 0) /* crops and flips suit natural images, not digits or synthetic bars */
        c->augment = channels == 3 && c->synthetic == 0;

    const char *d = c->defense;
    size_t dl = strlen(d);
    const char *suffix = "+gfa";
    p.gfa = strcmp(d, "gfa") == 0 || (dl > 4 && strcmp(d + dl - 4, suffix) == 0);
    size_t base_len = strcmp(d, "gfa") == 0 ? 0 : (p.gfa ? dl - 4 : dl);
    if (base_len == 0 || (base_len == 4 && strncmp(d, "none", 4) == 0))
        p.base = BASE_NONE;
    else if (base_len == 6 && strncmp(d, "pgd-at", 6) == 0)
        p.base = BASE_PGD;
    else if (base_len == 6 && strncmp(d, "trades", 6) == 0)
        p.base = BASE_TRADES;
    else
        die("--defense: unknown '%s' (none, pgd-at, trades, gfa, pgd-at+gfa, trades+gfa)", d);
    if (strcmp(d, "none+gfa") == 0) die("--defense: say 'gfa' for GFA alone");

    if (strcmp(c->gfa_mode, "sin2") == 0)
        p.gfa_mode = DD_GFA_SIN2;
    else if (strcmp(c->gfa_mode, "tangent") == 0)
        p.gfa_mode = DD_GFA_TANGENT;
    else if (strcmp(c->gfa_mode, "cos") == 0)
        p.gfa_mode = DD_GFA_COS;
    else
        die("--gfa-mode: unknown '%s' (sin2, cos, tangent)", c->gfa_mode);

    if (strcmp(c->loss, "ce") == 0)
        p.loss = DD_LOSS_CE;
    else if (strcmp(c->loss, "mse") == 0)
        p.loss = DD_LOSS_MSE;
    else
        die("--loss: unknown '%s' (ce, mse)", c->loss);
    if (strcmp(c->input_range, "std") != 0 && strcmp(c->input_range, "01") != 0 &&
        strcmp(c->input_range, "pm1") != 0)
        die("--input-range: unknown '%s' (std, 01, pm1)", c->input_range);

    if (strcmp(c->optimizer, "sgd") == 0)
        p.optim = DD_OPTIM_SGD;
    else if (strcmp(c->optimizer, "adam") == 0)
        p.optim = DD_OPTIM_ADAM;
    else if (strcmp(c->optimizer, "adamw") == 0)
        p.optim = DD_OPTIM_ADAMW;
    else
        die("--optimizer: unknown '%s' (sgd, adam, adamw)", c->optimizer);
    if (c->lr == 0.0) c->lr = p.optim == DD_OPTIM_SGD ? 0.01 : 1e-3;

    if (strcmp(c->schedule, "cosine") == 0)
        p.sched = DD_SCHED_COSINE;
    else if (strcmp(c->schedule, "step") == 0)
        p.sched = DD_SCHED_STEP;
    else if (strcmp(c->schedule, "onecycle") == 0)
        p.sched = DD_SCHED_ONE_CYCLE;
    else if (strcmp(c->schedule, "constant") == 0)
        p.sched = DD_SCHED_CONSTANT;
    else
        die("--schedule: unknown '%s' (cosine, step, onecycle, constant)", c->schedule);

    /* Madry's PGD step 2.5 eps / steps; TRADES' reference ratio is 0.007
     * per step for eps 0.031 over 10 steps (2.26 eps / steps). */
    if (c->train_step_size == 0.0)
        c->train_step_size =
            (p.base == BASE_TRADES ? 0.007 / 0.031 * 10.0 : 2.5) * c->train_eps / c->train_steps;
    return p;
}

/* ======================================================================== */
/* Sidecar state: "<out>.state"                                               */
/* ======================================================================== */
/*
 * Text lines, then the optimizer's state blob (optim.h) as raw bytes:
 *     deepdefense-train-state 1
 *     epochs_done 3
 *     weights_fnv 89ab...            FNV-1a of every parameter's floats
 *     opt.<name> <value>             one per saved option of opt_table
 *     optimizer_state <bytes>
 *     end
 *     <bytes of dd_optimizer_state_read()>
 * The weights fingerprint ties the sidecar to the checkpoint saved just
 * before it: if a crash fell between the two saves, resuming refuses the
 * mismatched pair instead of silently continuing from the wrong epoch.
 */

static uint64_t weights_fingerprint_or_die(const dd_model *m) {
    int np = 0;
    check_or_die(dd_model_num_params(m, &np), "dd_model_num_params");
    uint64_t h = 1469598103934665603ULL; /* FNV-1a 64-bit offset basis */
    for (int i = 0; i < np; i++) {
        dd_param_info pi;
        check_or_die(dd_model_param_info(m, i, &pi), "dd_model_param_info");
        float *buf = malloc_or_die(pi.count, sizeof *buf);
        check_or_die(dd_model_param_read(m, i, buf, pi.count), "dd_model_param_read");
        const unsigned char *b = (const unsigned char *)buf;
        for (size_t j = 0; j < pi.count * sizeof *buf; j++) {
            h ^= b[j];
            h *= 1099511628211ULL; /* FNV-1a 64-bit prime */
        }
        free(buf);
    }
    return h;
}

/* Writes path atomically: "<path>.tmp" (a fixed name, so an interrupted
 * write leaves nothing that accumulates), fsync, rename. */
static void save_state_or_die(const char *path, const config *c, int epochs_done, const dd_model *m,
                              const dd_optimizer *opt) {
    size_t bytes = 0;
    check_or_die(dd_optimizer_state_size(opt, &bytes), "dd_optimizer_state_size");
    unsigned char *blob = malloc_or_die(bytes, 1);
    check_or_die(dd_optimizer_state_read(opt, blob, bytes), "dd_optimizer_state_read");

    char tmp[1300];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "wb");
    if (f == NULL) die("cannot write %s: %s", tmp, strerror(errno));
    fprintf(f, "%s\nepochs_done %d\nweights_fnv %016llx\n", STATE_MAGIC, epochs_done,
            (unsigned long long)weights_fingerprint_or_die(m));
    char val[1100];
    for (int i = 0; i < NUM_OPTS; i++)
        if (opt_table[i].saved)
            fprintf(f, "opt.%s %s\n", opt_table[i].name, option_text(c, &opt_table[i], val, sizeof val));
    fprintf(f, "opt.augment %d\noptimizer_state %zu\nend\n", c->augment, bytes);
    int ok = fwrite(blob, 1, bytes, f) == bytes;
    ok = fflush(f) == 0 && ok;
    ok = fsync(fileno(f)) == 0 && ok;
    ok = fclose(f) == 0 && ok;
    free(blob);
    if (!ok || rename(tmp, path) != 0) {
        remove(tmp);
        die("cannot write %s: %s", path, strerror(errno));
    }
}

typedef struct saved_state {
    int epochs_done;
    uint64_t weights_fnv;
    unsigned char *blob;
    size_t blob_size;
    int saved_epochs; /* the saved --epochs where the command line changed it, else 0 */
} saved_state;

/* Reads path; options of the file replace those of c that were not given
 * on the command line (given[]); a given option that differs from the
 * saved one is kept with a warning (the run then differs from an
 * uninterrupted one). */
static saved_state load_state_or_die(const char *path, config *c, const int *given) {
    saved_state st;
    memset(&st, 0, sizeof st);
    FILE *f = fopen(path, "rb");
    if (f == NULL) die("cannot open %s (the state saved beside the checkpoint): %s", path, strerror(errno));
    char line[2200];
    int lineno = 0, ended = 0;
    while (!ended && fgets(line, sizeof line, f) != NULL) {
        lineno++;
        size_t len = strlen(line);
        if (len == 0 || line[len - 1] != '\n') die("%s:%d: line too long or truncated", path, lineno);
        line[len - 1] = '\0';
        if (lineno == 1) {
            if (strcmp(line, STATE_MAGIC) != 0)
                die("%s: not a train_cifar state file (first line '%s')", path, line);
            continue;
        }
        char *sp = strchr(line, ' ');
        if (strcmp(line, "end") == 0) {
            ended = 1;
            continue;
        }
        if (sp == NULL) die("%s:%d: malformed line '%s'", path, lineno, line);
        *sp = '\0';
        const char *key = line, *val = sp + 1;
        if (strcmp(key, "epochs_done") == 0) {
            st.epochs_done = (int)parse_long_or_die(path, val, 0, 100000);
        } else if (strcmp(key, "weights_fnv") == 0) {
            st.weights_fnv = strtoull(val, NULL, 16);
        } else if (strcmp(key, "optimizer_state") == 0) {
            st.blob_size = (size_t)parse_long_or_die(path, val, 0, 1L << 40);
        } else if (strcmp(key, "opt.augment") == 0) {
            int v = (int)parse_long_or_die(path, val, 0, 1);
            if (c->augment >= 0 && c->augment != v)
                fprintf(stderr, "warning: --%saugment differs from the saved run\n", c->augment ? "" : "no-");
            else
                c->augment = v;
        } else if (strncmp(key, "opt.", 4) == 0) {
            int k = -1;
            for (int j = 0; j < NUM_OPTS; j++)
                if (strcmp(opt_table[j].name, key + 4) == 0) k = j;
            if (k < 0 || !opt_table[k].saved) die("%s:%d: unknown option '%s'", path, lineno, key + 4);
            char cur[1100];
            if (!given[k]) {
                set_option(c, &opt_table[k], val);
            } else if (strcmp(option_text(c, &opt_table[k], cur, sizeof cur), val) != 0 &&
                       (strcmp(opt_table[k].name, "arch") == 0 ||
                        strcmp(opt_table[k].name, "input-range") == 0)) {
                /* the checkpoint holds the network: it cannot become another */
                die("--%s %s: the run saved in %s has --%s %s, and a resumed run keeps its "
                    "network (leave --%s out)",
                    opt_table[k].name, cur, path, opt_table[k].name, val, opt_table[k].name);
            } else if (strcmp(opt_table[k].name, "epochs") == 0 &&
                       strcmp(option_text(c, &opt_table[k], cur, sizeof cur), val) != 0) {
                st.saved_epochs = (int)parse_long_or_die(path, val, 1, 100000); /* noted with the schedule */
            } else if (strcmp(option_text(c, &opt_table[k], cur, sizeof cur), val) != 0) {
                fprintf(stderr,
                        "warning: --%s %s differs from the saved run's %s: the result "
                        "will differ from an uninterrupted run\n",
                        opt_table[k].name, cur, val);
            }
        } else {
            die("%s:%d: unknown key '%s'", path, lineno, key);
        }
    }
    if (!ended) die("%s: truncated (no 'end' line)", path);
    st.blob = malloc_or_die(st.blob_size, 1);
    if (fread(st.blob, 1, st.blob_size, f) != st.blob_size || fgetc(f) != EOF)
        die("%s: the optimizer state is truncated or followed by extra bytes", path);
    fclose(f);
    return st;
}

/* The learning-rate schedule of a run of total_steps steps. */
static dd_lr_schedule schedule_of(const plan *p, const config *c, long total_steps) {
    dd_lr_schedule s;
    dd_lr_schedule_init(&s, p->sched, (float)c->lr, total_steps);
    if (p->sched == DD_SCHED_COSINE) s.warmup_steps = (int64_t)(c->warmup * (double)total_steps);
    if (p->sched == DD_SCHED_STEP && s.step_size < 1) s.step_size = 1;
    return s;
}

/* ======================================================================== */
/* Progress display                                                           */
/* ======================================================================== */

typedef struct meter {
    int tty; /* 1: one updating line; 0: log lines */
    int log_every;
    double t_start;      /* when this process started training */
    long steps_total;    /* steps of the whole run */
    long steps_at_start; /* steps already done when this process started */
    double last_draw;
    /* running sums over the current epoch */
    double loss_sum, reg_sum, align_sum;
    double hook_align[DD_MAX_HOOKS]; /* per hook, sample-weighted */
    dd_node hook_node[DD_MAX_HOOKS];
    long correct, seen, batches;
    int hooks;
} meter;

static void meter_epoch_start(meter *mt) {
    mt->loss_sum = mt->reg_sum = mt->align_sum = 0.0;
    memset(mt->hook_align, 0, sizeof mt->hook_align);
    mt->correct = mt->seen = mt->batches = 0;
}

static void meter_add(meter *mt, const dd_step_stats *s) {
    mt->loss_sum += s->loss * s->batch;
    mt->correct += s->correct;
    mt->seen += s->batch;
    mt->batches++;
    mt->hooks = s->num_hooks;
    if (s->num_hooks > 0) {
        double a = 0.0, r = 0.0;
        for (int t = 0; t < s->num_hooks; t++) {
            a += s->hook_align[t];
            r += s->hook_lambda[t] * s->hook_reg[t];
            mt->hook_align[t] += s->hook_align[t] * s->batch;
            mt->hook_node[t] = s->hook_node[t];
        }
        mt->align_sum += a / s->num_hooks * s->batch;
        mt->reg_sum += r * s->batch;
    }
}

/* Throughput and ETA of the whole run, from this process's own steps. */
static void meter_rates(const meter *mt, long step, int batch, double *img_s, double *eta) {
    double el = now_seconds() - mt->t_start;
    long done = step - mt->steps_at_start;
    *img_s = el > 0 ? (double)done * batch / el : 0.0;
    *eta = done > 0 ? el / (double)done * (double)(mt->steps_total - step) : 0.0;
}

static void meter_show(meter *mt, int epoch, int epochs, int b, int nb, long step, int batch, float lr) {
    double now = now_seconds();
    int last = b == nb;
    if (mt->tty) {
        if (!last && now - mt->last_draw < 0.2) /* at most 5 redraws a second */
            return;
    } else if (b % mt->log_every != 0 && !last) {
        return;
    } else if (last) {
        return; /* the epoch summary line follows */
    }
    mt->last_draw = now;
    double img_s, eta;
    meter_rates(mt, step, batch, &img_s, &eta);
    char etab[32], bar[24];
    double seen = mt->seen > 0 ? (double)mt->seen : 1.0;
    char align[48] = "";
    if (mt->hooks > 0) snprintf(align, sizeof align, "  align %.3f", mt->align_sum / seen);
    if (mt->tty) {
        int width = 20, fill = nb > 0 ? b * width / nb : 0;
        for (int i = 0; i < width; i++) bar[i] = i < fill ? '#' : '.';
        bar[width] = '\0';
        printf("\repoch %d/%d [%s] %d/%d  %.0f img/s  ETA %s  loss %.4f  acc %.2f%%%s\033[K", epoch + 1,
               epochs, bar, b, nb, img_s, format_duration(eta, etab, sizeof etab), mt->loss_sum / seen,
               100.0 * (double)mt->correct / seen, align);
    } else {
        printf("epoch %d/%d  batch %d/%d  loss %.4f  acc %.2f%%%s  lr %.5g  %.0f img/s  ETA %s\n", epoch + 1,
               epochs, b, nb, mt->loss_sum / seen, 100.0 * (double)mt->correct / seen, align, (double)lr,
               img_s, format_duration(eta, etab, sizeof etab));
    }
    fflush(stdout);
}

/* Appends the epoch's line to the CSV at path (a header first when the
 * file is new or empty): epoch, the training loss and accuracy, test
 * accuracy, learning rate, seconds, images/s, sum lambda R, and the mean
 * |cos| over hooks and per hook (columns named after the hooked tensor's
 * node). A resumed run appends to the same file. */
static void write_metrics_or_die(const char *path, const dd_model *m, const meter *mt, int epoch,
                                 double test_acc, float lr, double seconds) {
    FILE *f = fopen(path, "a");
    if (f == NULL) die("cannot append to %s: %s", path, strerror(errno));
    double seen = mt->seen > 0 ? (double)mt->seen : 1.0;
    if (ftell(f) == 0) {
        fprintf(f, "epoch,train_loss,train_acc,test_acc,lr,seconds,img_s,reg,align_mean");
        for (int t = 0; t < mt->hooks; t++) {
            dd_node_info info;
            memset(&info, 0, sizeof info);
            check_or_die(dd_model_node_info(m, mt->hook_node[t], &info), "dd_model_node_info");
            fprintf(f, ",align:%s", info.name);
        }
        fprintf(f, "\n");
    }
    fprintf(f, "%d,%.6f,%.6f,%.6f,%.6g,%.1f,%.1f,%.6f,%.6f", epoch + 1, mt->loss_sum / seen,
            (double)mt->correct / seen, test_acc, (double)lr, seconds,
            (double)mt->seen / (seconds > 0 ? seconds : 1.0), mt->reg_sum / seen,
            mt->hooks > 0 ? mt->align_sum / seen : 0.0);
    for (int t = 0; t < mt->hooks; t++) fprintf(f, ",%.6f", mt->hook_align[t] / seen);
    fprintf(f, "\n");
    if (fclose(f) != 0) die("cannot write %s: %s", path, strerror(errno));
}

/* Test hook (tests/examples/run_examples.sh): with TRAIN_CIFAR_CRASH_AT=k
 * in the environment the process dies (_exit, as a kill would) at point k
 * of the first end-of-epoch save: 1 after the new state is written, 2
 * after the checkpoint, 3 after the state is renamed into place. */
static void test_crash_point(int k) {
    const char *e = getenv("TRAIN_CIFAR_CRASH_AT");
    if (e != NULL && atoi(e) == k) {
        fflush(stdout);
        _exit(137);
    }
}

/* ======================================================================== */
/* Training                                                                   */
/* ======================================================================== */

typedef struct trainer {
    const config *c;
    plan p;
    dd_model *m;
    dd_optimizer *opt;
    dd_attack *attack; /* PGD-AT / TRADES inner attack, or NULL */
    dd_lr_schedule sched;
    float *x;   /* (batch, C, H, W) */
    int32_t *y; /* (batch) */
} trainer;

/* The inner attack of adversarial training, reseeded every epoch so that
 * random starts differ between epochs yet a resumed run draws the same. */
static void make_attack_or_die(trainer *t, int epoch) {
    dd_attack_destroy(t->attack);
    t->attack = NULL;
    if (t->p.base == BASE_NONE) return;
    dd_attack_options ao;
    dd_attack_options_init(&ao, t->p.base == BASE_PGD ? DD_ATTACK_PGD_LINF : DD_ATTACK_TRADES_KL);
    /* the ramp scales eps and the step together (the same number of steps
     * covers the smaller ball) */
    double ramp =
        t->c->eps_ramp > 0 && epoch + 1 < t->c->eps_ramp ? (double)(epoch + 1) / t->c->eps_ramp : 1.0;
    ao.eps = (float)(t->c->train_eps * ramp);
    ao.steps = t->c->train_steps;
    ao.step_size = (float)(t->c->train_step_size * ramp);
    ao.seed = (uint64_t)t->c->seed * 1000003u + (uint64_t)epoch;
    check_or_die(dd_attack_create(&t->attack, t->m, &ao), "dd_attack_create (training attack)");
}

/* One optimisation step on the batch (x, y) of n samples. */
static void train_step_or_die(trainer *t, int n, dd_step_stats *stats) {
    switch (t->p.base) {
    case BASE_NONE:
        check_or_die(dd_model_zero_grad(t->m), "dd_model_zero_grad");
        check_or_die(dd_model_forward(t->m, t->x, n, DD_TRAIN, NULL), "dd_model_forward");
        check_or_die(dd_model_backward(t->m, t->y, stats), "dd_model_backward");
        check_or_die(dd_optimizer_step(t->opt), "dd_optimizer_step");
        break;
    case BASE_PGD:
        check_or_die(dd_attack_train_step(t->attack, t->opt, t->x, t->y, n, NULL, stats),
                     "dd_attack_train_step");
        break;
    case BASE_TRADES:
        check_or_die(
            dd_attack_trades_step(t->attack, t->opt, t->x, t->y, n, (float)t->c->trades_beta, NULL, stats),
            "dd_attack_trades_step");
        break;
    }
}

int main(int argc, char **argv) {
    config cfg;
    int given[NUM_OPTS];
    memset(given, 0, sizeof given);
    config_defaults(&cfg);
    parse_args(argc, argv, &cfg, given);

    /* values that would otherwise silently mean "the default" */
    if (given_option(given, "arch") && cfg.arch[0] == '\0')
        die("--arch: empty (cnn-cw, resnet20, preact-resnet18, mlp)");
    if (given_option(given, "lr") && cfg.lr == 0.0)
        die("--lr 0: the learning rate must be > 0 (leave --lr out for the optimizer's default)");
    if (given_option(given, "train-step-size") && cfg.train_step_size == 0.0)
        die("--train-step-size 0: the attack step must be > 0 (leave it out for 2.5 eps / steps)");
    if (given_option(given, "train-eps") && cfg.train_eps == 0.0)
        die("--train-eps 0: the adversarial-training budget must be > 0 (use --defense none or gfa "
            "for training without an attack)");

    saved_state st;
    memset(&st, 0, sizeof st);
    char state_path[1100];
    if (cfg.resume[0] != '\0') {
        snprintf(state_path, sizeof state_path, "%s.state", cfg.resume);
        if (!given_option(given, "out")) snprintf(cfg.out, sizeof cfg.out, "%s", cfg.resume);
        st = load_state_or_die(state_path, &cfg, given);
    }

    /* ---- data ---- */
    dd_dataset *train = NULL, *test = NULL;
    const char *source;
    if (cfg.synthetic > 0) {
        source = "synthetic";
        train = synthetic_dataset_or_die(cfg.synthetic, 3, 16, 16, 10, (uint64_t)cfg.seed);
        int ntest = cfg.test_limit > 0 ? (int)cfg.test_limit : 500;
        test = synthetic_dataset_or_die(ntest, 3, 16, 16, 10, (uint64_t)cfg.seed + 7777);
    } else {
        if (cfg.data[0] == '\0') {
            struct stat sb;
            if (stat(DEFAULT_DATA_DIR, &sb) != 0)
                die("no --data given and %s does not exist: install Debian's "
                    "dataset-fashion-mnist (apt-get install dataset-fashion-mnist) or pass "
                    "--data DIR (CIFAR-10 binary or IDX files)",
                    DEFAULT_DATA_DIR);
            snprintf(cfg.data, sizeof cfg.data, "%s", DEFAULT_DATA_DIR);
        }
        source = cfg.data;
        train = open_dataset_or_die(cfg.data, DD_SPLIT_TRAIN, cfg.train_limit);
        test = open_dataset_or_die(cfg.data, DD_SPLIT_TEST, cfg.test_limit);
    }
    if (cfg.synthetic > 0 && cfg.train_limit > 0 && cfg.train_limit < cfg.synthetic) {
        dd_dataset *sub = NULL;
        check_or_die(dd_dataset_subset(&sub, train, 0, (int)cfg.train_limit), "dd_dataset_subset");
        dd_dataset_destroy(train);
        train = sub;
    }
    int ntrain = 0, ntest = 0, C = 0, H = 0, W = 0, K = 0;
    check_or_die(dd_dataset_info(train, &ntrain, &C, &H, &W, &K), "dd_dataset_info");
    check_or_die(dd_dataset_info(test, &ntest, NULL, NULL, NULL, NULL), "dd_dataset_info");
    plan p = resolve(&cfg, C);
    /* Where the results go must be writable now, not after the first epoch. */
    if (!can_write_next_to(cfg.out)) die("cannot write next to --out %s: %s", cfg.out, strerror(errno));
    if (cfg.metrics[0] != '\0') {
        FILE *f = fopen(cfg.metrics, "a");
        if (f == NULL) die("cannot append to --metrics %s: %s", cfg.metrics, strerror(errno));
        fclose(f);
    }

    /* ---- model, hooks, optimizer ---- */
    dd_model_options mo;
    dd_model_options_init(&mo);
    mo.num_threads = cfg.threads;
    mo.seed = (uint64_t)cfg.seed;
    dd_model *m = NULL;
    if (cfg.resume[0] != '\0') {
        check_or_die(dd_model_load_ex(cfg.resume, &mo, cfg.batch, &m), cfg.resume);
        int mc = 0, mh = 0, mw = 0, mk = 0;
        check_or_die(dd_model_input_shape(m, &mc, &mh, &mw), "dd_model_input_shape");
        check_or_die(dd_model_num_classes(m, &mk), "dd_model_num_classes");
        if (mc != C || mh != H || mw != W || mk != K)
            die("%s takes %dx%dx%d images and %d classes, but %s has %dx%dx%d images and %d "
                "classes: resume with the data the run was trained on",
                cfg.resume, mc, mh, mw, mk, source, C, H, W, K);
        if (weights_fingerprint_or_die(m) != st.weights_fnv) {
            /* a save interrupted after the checkpoint: its state is ".next" */
            char next_path[1200];
            snprintf(next_path, sizeof next_path, "%s.next", state_path);
            struct stat sb;
            if (stat(next_path, &sb) != 0)
                die("%s does not hold the weights %s was saved with, and there is no %s", cfg.resume,
                    state_path, next_path);
            free(st.blob);
            st = load_state_or_die(next_path, &cfg, given);
            if (weights_fingerprint_or_die(m) != st.weights_fnv)
                die("%s matches neither %s nor %s", cfg.resume, state_path, next_path);
            /* finish that save's commit */
            if (rename(next_path, state_path) != 0)
                die("cannot rename %s to %s: %s", next_path, state_path, strerror(errno));
            printf("recovered the state of an interrupted save from %s\n", next_path);
        }
    } else {
        /* std: CIFAR-10's per-channel statistics; pm1: x -> (x - 0.5) / 0.5 =
         * 2x - 1; 01: no normalize node (the first conv sees [0,1] pixels) */
        float half[64];
        for (int c = 0; c < 64; c++) half[c] = 0.5f;
        int pm1 = strcmp(cfg.input_range, "pm1") == 0, raw = strcmp(cfg.input_range, "01") == 0;
        if (pm1 && C > 64) die("--input-range pm1: at most 64 channels");
        check_or_die(dd_zoo_create(&m, cfg.arch, C, H, W, K, !raw, pm1 ? half : NULL, pm1 ? half : NULL,
                                   cfg.batch, &mo),
                     "dd_zoo_create");
    }
    check_or_die(dd_model_set_loss(m, p.loss), "dd_model_set_loss");
    if (p.gfa) {
        check_or_die(dd_gfa_set_mode(m, p.gfa_mode), "dd_gfa_set_mode");
        check_or_die(dd_gfa_hook_spec(m, cfg.gfa_hooks, (float)cfg.gfa_lambda), "--gfa-hooks");
    } else {
        check_or_die(dd_gfa_clear(m), "dd_gfa_clear");
    }

    dd_optimizer_options oo;
    dd_optimizer_options_init(&oo, p.optim);
    oo.lr = (float)cfg.lr;
    if (cfg.weight_decay >= 0.0) oo.weight_decay = (float)cfg.weight_decay;
    cfg.weight_decay = oo.weight_decay; /* the resolved value goes into the sidecar */
    dd_optimizer *opt = NULL;
    check_or_die(dd_optimizer_create(&opt, m, &oo), "dd_optimizer_create");
    if (st.blob != NULL) {
        check_or_die(dd_optimizer_state_write(opt, st.blob, st.blob_size), state_path);
        free(st.blob);
        st.blob = NULL;
    }

    /* ---- batches ---- */
    dd_batch_iter_options io;
    dd_batch_iter_options_init(&io);
    io.seed = (uint64_t)cfg.seed;
    io.num_threads = cfg.threads;
    io.crop_padding = cfg.augment ? 4 : 0;
    io.hflip = cfg.augment ? 1 : 0;
    /* Dropping a ragged last batch keeps batch-norm statistics sane; only
     * possible when there is at least one full batch. */
    io.drop_last = ntrain >= cfg.batch;
    dd_batch_iter *it = NULL;
    check_or_die(dd_batch_iter_create(&it, train, cfg.batch, &io), "dd_batch_iter_create");
    int nb = 0;
    check_or_die(dd_batch_iter_info(it, &nb, NULL), "dd_batch_iter_info");

    trainer t;
    memset(&t, 0, sizeof t);
    t.c = &cfg;
    t.p = p;
    t.m = m;
    t.opt = opt;
    long total_steps = (long)cfg.epochs * nb;
    t.sched = schedule_of(&p, &cfg, total_steps);
    if (st.saved_epochs > 0) {
        /* --resume with another --epochs: the schedule is the one of the new
         * length, from the first step (documented in --help), so the rate
         * at the resumed step changes; say by how much. */
        dd_lr_schedule old = schedule_of(&p, &cfg, (long)st.saved_epochs * nb);
        float lr_old = 0.0f, lr_new = 0.0f;
        int64_t at = (int64_t)st.epochs_done * nb;
        check_or_die(dd_lr_schedule_eval(&old, at, &lr_old), "dd_lr_schedule_eval");
        check_or_die(dd_lr_schedule_eval(&t.sched, at, &lr_new), "dd_lr_schedule_eval");
        fprintf(stderr,
                "note: --epochs %d, the saved run's %d: the learning-rate schedule is recomputed over %d "
                "epochs, so at the resumed epoch %d the rate is %g instead of %g (a finished run "
                "trained further starts a new decay)\n",
                cfg.epochs, st.saved_epochs, cfg.epochs, st.epochs_done + 1, (double)lr_new, (double)lr_old);
    }
    size_t per = (size_t)C * H * W;
    t.x = malloc_or_die((size_t)cfg.batch * per, sizeof *t.x);
    t.y = malloc_or_die((size_t)cfg.batch, sizeof *t.y);

    /* ---- header ---- */
    printf("deepdefense %s: %s, %d train / %d test images of %dx%dx%d, %d classes\n", dd_version_string(),
           source, ntrain, ntest, C, H, W, K);
    printf("arch %s, defense %s", cfg.arch, cfg.defense);
    if (p.gfa) {
        int nh = 0;
        check_or_die(dd_gfa_num_hooks(m, &nh), "dd_gfa_num_hooks");
        printf(" (hooks %s: %d, lambda %g, %s)", cfg.gfa_hooks, nh, cfg.gfa_lambda, cfg.gfa_mode);
    }
    if (p.base == BASE_PGD)
        printf(" (eps %.4g, %d steps of %.4g%s)", cfg.train_eps, cfg.train_steps, cfg.train_step_size,
               cfg.eps_ramp > 0 ? ", eps ramped" : "");
    if (p.base == BASE_TRADES)
        printf(" (eps %.4g, %d steps of %.4g, beta %g)", cfg.train_eps, cfg.train_steps, cfg.train_step_size,
               cfg.trades_beta);
    printf(
        "\nloss %s, input range %s, %s lr %g %s, weight decay %g, %d epochs x %d batches of %d, augment %s, "
        "seed %ld, threads %d\n",
        cfg.loss, cfg.input_range, cfg.optimizer, cfg.lr, cfg.schedule, (double)oo.weight_decay, cfg.epochs,
        nb, cfg.batch, cfg.augment ? "crop+flip" : "off", cfg.seed, cfg.threads);
    if (st.epochs_done >= cfg.epochs)
        printf("the run in %s is already complete (%d of %d epochs): nothing to train\n", cfg.resume,
               st.epochs_done, cfg.epochs);
    else if (st.epochs_done > 0)
        printf("resuming %s after epoch %d\n", cfg.resume, st.epochs_done);
    fflush(stdout);

    /* ---- the epochs ---- */
    meter mt;
    memset(&mt, 0, sizeof mt);
    mt.tty = cfg.progress >= 0 ? cfg.progress : isatty(STDOUT_FILENO);
    mt.log_every = cfg.log_every > 0 ? cfg.log_every : (nb >= 10 ? nb / 10 : 1);
    mt.steps_total = total_steps;
    mt.steps_at_start = (long)st.epochs_done * nb;
    mt.t_start = now_seconds();
    char state_out[1100], state_next[1200];
    snprintf(state_out, sizeof state_out, "%s.state", cfg.out);
    snprintf(state_next, sizeof state_next, "%s.next", state_out);
    int last_epoch = cfg.stop_after > 0 && cfg.stop_after < cfg.epochs ? cfg.stop_after : cfg.epochs;
    double test_acc = -1.0;
    for (int epoch = st.epochs_done; epoch < last_epoch; epoch++) {
        double t0 = now_seconds();
        check_or_die(dd_batch_iter_reset(it, epoch), "dd_batch_iter_reset");
        make_attack_or_die(&t, epoch);
        meter_epoch_start(&mt);
        float lr = 0.0f;
        for (int b = 1;; b++) {
            int n = 0;
            check_or_die(dd_batch_iter_next(it, t.x, t.y, NULL, &n), "dd_batch_iter_next");
            if (n == 0) break;
            long step = (long)epoch * nb + (b - 1);
            check_or_die(dd_lr_schedule_eval(&t.sched, step, &lr), "dd_lr_schedule_eval");
            check_or_die(dd_optimizer_set_lr(opt, lr), "dd_optimizer_set_lr");
            dd_step_stats stats;
            dd_step_stats_init(&stats);
            train_step_or_die(&t, n, &stats);
            meter_add(&mt, &stats);
            meter_show(&mt, epoch, cfg.epochs, b, nb, step + 1, cfg.batch, lr);
        }
        double train_s = now_seconds() - t0;
        test_acc = accuracy_or_die(m, test, 0);
        /* The pair (checkpoint, state) is committed as one: the new state
         * goes to "<out>.state.next" first, then the checkpoint replaces the
         * old one, then the state is renamed into place. Interrupted at any
         * point, the files on disk hold a matching pair: the old one, or the
         * new checkpoint with ".state.next" (which --resume then takes). */
        save_state_or_die(state_next, &cfg, epoch + 1, m, opt);
        test_crash_point(1);
        check_or_die(dd_model_save(m, cfg.out), cfg.out);
        test_crash_point(2);
        if (rename(state_next, state_out) != 0)
            die("cannot rename %s to %s: %s", state_next, state_out, strerror(errno));
        test_crash_point(3);
        if (cfg.metrics[0] != '\0') write_metrics_or_die(cfg.metrics, m, &mt, epoch, test_acc, lr, train_s);

        double seen = mt.seen > 0 ? (double)mt.seen : 1.0;
        char align[64] = "", dur[32];
        if (mt.hooks > 0)
            snprintf(align, sizeof align, "  align %.3f  reg %.4f", mt.align_sum / seen, mt.reg_sum / seen);
        printf("%sepoch %d/%d  loss %.4f  %sacc %.2f%%%s  test acc %.2f%%  lr %.3g  %s  "
               "(%.0f img/s)  saved %s\n",
               mt.tty ? "\r\033[K" : "", epoch + 1, cfg.epochs, mt.loss_sum / seen,
               p.base == BASE_PGD ? "adv " : "", 100.0 * (double)mt.correct / seen, align, 100.0 * test_acc,
               (double)lr, format_duration(train_s, dur, sizeof dur),
               (double)mt.seen / (train_s > 0 ? train_s : 1.0), cfg.out);
        fflush(stdout);
    }
    dd_attack_destroy(t.attack);
    t.attack = NULL;

    if (last_epoch < cfg.epochs) {
        printf("stopped after epoch %d of %d (--stop-after); continue with --resume %s\n", last_epoch,
               cfg.epochs, cfg.out);
    } else {
        /* ---- the report ---- */
        char dur[32];
        if (test_acc < 0.0) test_acc = accuracy_or_die(m, test, 0);
        printf("\nclean test accuracy: %.2f%% (%d images)\n", 100.0 * test_acc, ntest);
        int ne = cfg.eval_n < ntest ? cfg.eval_n : ntest;
        if (ne > 0) {
            double r0 = now_seconds();
            double fgsm = robust_accuracy_or_die(m, test, ne, DD_ATTACK_FGSM, (float)cfg.eval_eps);
            double pgd = robust_accuracy_or_die(m, test, ne, DD_ATTACK_PGD_LINF, (float)cfg.eval_eps);
            printf("robust accuracy at eps %.4g (Linf, %d test images): FGSM %.2f%%, PGD-10 %.2f%% "
                   "(%s)\n",
                   cfg.eval_eps, ne, 100.0 * fgsm, 100.0 * pgd,
                   format_duration(now_seconds() - r0, dur, sizeof dur));
        }
        printf("total training time %s; model saved to %s\n",
               format_duration(now_seconds() - mt.t_start, dur, sizeof dur), cfg.out);
    }

    free(t.x);
    free(t.y);
    dd_batch_iter_destroy(it);
    dd_optimizer_destroy(opt);
    dd_model_destroy(m);
    dd_dataset_destroy(train);
    dd_dataset_destroy(test);
    return 0;
}
