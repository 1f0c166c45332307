/* examples/train_cifar_mpi.c -- data-parallel training over MPI.
 *
 *   mpirun -np 2 train_cifar_mpi --data DIR --defense gfa --epochs 10
 *   mpirun --hostfile hosts -np 16 train_cifar_mpi --data DIR --defense pgd-at
 *
 * Every rank holds the model and trains on its shard of each epoch (the
 * batch iterator's num_shards/shard, via dd_mpi_shard_options); after each
 * backward pass the gradients are averaged with one MPI_Allreduce
 * (dd_mpi_allreduce_grads), so every rank applies the same update. The
 * global batch is ranks x --batch. Rank 0 prints progress, evaluates on the
 * test set and writes the checkpoint (atomically, after averaging the
 * batch-norm running statistics over the ranks). Defenses: none, gfa
 * (--gfa-hooks, --gfa-lambda, --gfa-mode, --loss), pgd-at (Madry PGD-10 at
 * eps 8/255) and pgd-at+gfa. A failure on any rank (an unreadable data
 * directory, a non-finite loss) stops every rank with a message from the
 * rank that failed: each step's status goes through the collective
 * (dd_mpi_agree), so no rank waits forever. train_cifar has the options
 * this example leaves out (resume, TRADES, schedules, augmentation knobs).
 */
#include "common.h"

#include <deepdefense/mpi.h>

typedef struct options {
    const char *data, *arch, *defense, *hooks, *gfa_mode, *loss, *out;
    int synthetic, epochs, batch, threads;
    long train_limit, test_limit;
    double lr, lambda;
    long seed;
} options;

static int g_rank;

static void usage(void) {
    if (g_rank == 0)
        printf("usage: mpirun -np N train_cifar_mpi [options]\n"
               "  --data DIR         CIFAR-10 binary or IDX directory\n"
               "  --synthetic N      N synthetic 3x16x16 training images instead (tests)\n"
               "  --arch A           cnn-cw|resnet20|preact-resnet18|mlp (default cnn-cw)\n"
               "  --defense D        none|gfa|pgd-at|pgd-at+gfa (default gfa)\n"
               "  --gfa-hooks SPEC   first|deep|all|NAME[:LAMBDA],... (default deep)\n"
               "  --gfa-lambda X     (default 0.02)   --gfa-mode sin2|cos|tangent (default sin2)\n"
               "  --loss ce|mse      training loss (default ce)\n"
               "  --epochs N (default 10)  --batch N per rank (default 64)  --lr X (default 0.01)\n"
               "  --threads N        OpenMP threads per rank (default 1)\n"
               "  --seed N (default 1)  --train-limit N  --test-limit N\n"
               "  --out PATH         checkpoint written by rank 0 every epoch (default model.safetensors)\n");
}

/* Collective: stops every rank when any rank's s is not DD_OK; the ranks
 * that failed print their own message. */
static void sync_or_exit(dd_mpi *d, dd_status s, const char *what) {
    dd_status a = dd_mpi_agree(d, s);
    if (a == DD_OK) return;
    if (s != DD_OK)
        fprintf(stderr, "rank %d: error: %s: %s: %s\n", g_rank, what, dd_status_string(s), dd_last_error());
    else if (g_rank == 0)
        fprintf(stderr, "error: %s: %s\n", what, dd_last_error());
    dd_mpi_destroy(d);
    MPI_Finalize();
    exit(1);
}

/* The first failure of a sequence of calls: later calls are skipped. */
#define TRY(st, call)                     \
    do {                                  \
        if ((st) == DD_OK) (st) = (call); \
    } while (0)

static void parse(int argc, char **argv, options *o) {
    memset(o, 0, sizeof *o);
    o->arch = "cnn-cw";
    o->defense = "gfa";
    o->hooks = "deep";
    o->gfa_mode = "sin2";
    o->loss = "ce";
    o->out = "model.safetensors";
    o->epochs = 10;
    o->batch = 64;
    o->threads = 1;
    o->lr = 0.01;
    o->lambda = 0.02;
    o->seed = 1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0) {
            usage();
            MPI_Finalize();
            exit(0);
        }
        if (i + 1 >= argc) die("%s needs a value (see --help)", a);
        const char *v = argv[++i];
        if (strcmp(a, "--data") == 0)
            o->data = v;
        else if (strcmp(a, "--synthetic") == 0)
            o->synthetic = (int)parse_long_or_die(a, v, 1, 10000000);
        else if (strcmp(a, "--arch") == 0)
            o->arch = v;
        else if (strcmp(a, "--defense") == 0)
            o->defense = v;
        else if (strcmp(a, "--gfa-hooks") == 0)
            o->hooks = v;
        else if (strcmp(a, "--gfa-lambda") == 0)
            o->lambda = parse_double_or_die(a, v, 0, 1e6);
        else if (strcmp(a, "--gfa-mode") == 0)
            o->gfa_mode = v;
        else if (strcmp(a, "--loss") == 0)
            o->loss = v;
        else if (strcmp(a, "--epochs") == 0)
            o->epochs = (int)parse_long_or_die(a, v, 1, 100000);
        else if (strcmp(a, "--batch") == 0)
            o->batch = (int)parse_long_or_die(a, v, 1, 65536);
        else if (strcmp(a, "--threads") == 0)
            o->threads = (int)parse_long_or_die(a, v, 1, 1024);
        else if (strcmp(a, "--lr") == 0)
            o->lr = parse_double_or_die(a, v, 1e-9, 1e3);
        else if (strcmp(a, "--seed") == 0)
            o->seed = parse_long_or_die(a, v, 0, 2147483647L);
        else if (strcmp(a, "--train-limit") == 0)
            o->train_limit = parse_long_or_die(a, v, 1, 2147483647L);
        else if (strcmp(a, "--test-limit") == 0)
            o->test_limit = parse_long_or_die(a, v, 1, 2147483647L);
        else if (strcmp(a, "--out") == 0)
            o->out = v;
        else
            die("unknown option '%s' (see --help)", a);
    }
    if (!o->data && !o->synthetic) die("--data DIR or --synthetic N is required (see --help)");
    if (strcmp(o->defense, "none") && strcmp(o->defense, "gfa") && strcmp(o->defense, "pgd-at") &&
        strcmp(o->defense, "pgd-at+gfa"))
        die("--defense: unknown '%s' (none, gfa, pgd-at, pgd-at+gfa)", o->defense);
}

static dd_status open_data(const options *o, dd_dataset **train, dd_dataset **test) {
    if (o->synthetic) {
        /* train_cifar's synthetic sets (the same seeds) */
        *train = synthetic_dataset_or_die(o->synthetic, 3, 16, 16, 10, (uint64_t)o->seed);
        *test = synthetic_dataset_or_die(o->test_limit > 0 ? (int)o->test_limit : 500, 3, 16, 16, 10,
                                         (uint64_t)o->seed + 7777);
        return DD_OK;
    }
    dd_status s = dd_dataset_open_auto(train, o->data, DD_SPLIT_TRAIN);
    TRY(s, dd_dataset_open_auto(test, o->data, DD_SPLIT_TEST));
    for (int k = 0; k < 2 && s == DD_OK; k++) {
        dd_dataset **ds = k ? test : train;
        long limit = k ? o->test_limit : o->train_limit;
        int n = 0;
        TRY(s, dd_dataset_info(*ds, &n, NULL, NULL, NULL, NULL));
        if (s == DD_OK && limit > 0 && limit < n) {
            dd_dataset *sub = NULL;
            TRY(s, dd_dataset_subset(&sub, *ds, 0, (int)limit));
            dd_dataset_destroy(*ds);
            *ds = sub;
        }
    }
    return s;
}

int main(int argc, char **argv) {
    int provided = 0;
    MPI_Init_thread(&argc, &argv, MPI_THREAD_FUNNELED, &provided);
    MPI_Comm_rank(MPI_COMM_WORLD, &g_rank);
    options o;
    parse(argc, argv, &o);
    dd_mpi *d = NULL;
    check_or_die(dd_mpi_create(&d, MPI_COMM_WORLD), "dd_mpi_create");
    int rank = 0, size = 1;
    check_or_die(dd_mpi_info(d, &rank, &size), "dd_mpi_info");

    /* ---- data, model, optimizer (every rank alike, then rank 0's weights) ---- */
    dd_dataset *train = NULL, *test = NULL;
    dd_status s = open_data(&o, &train, &test);
    sync_or_exit(d, s, o.data ? o.data : "synthetic data");
    int ntrain = 0, C = 0, H = 0, W = 0, K = 0;
    TRY(s, dd_dataset_info(train, &ntrain, &C, &H, &W, &K));
    dd_model_options mo;
    dd_model_options_init(&mo);
    mo.num_threads = o.threads;
    mo.seed = (uint64_t)o.seed;
    dd_model *m = NULL;
    TRY(s, dd_zoo_create(&m, o.arch, C, H, W, K, 1, NULL, NULL, o.batch, &mo));
    int gfa = strstr(o.defense, "gfa") != NULL, pgd = strncmp(o.defense, "pgd-at", 6) == 0;
    dd_gfa_mode gm = strcmp(o.gfa_mode, "cos") == 0       ? DD_GFA_COS
                     : strcmp(o.gfa_mode, "tangent") == 0 ? DD_GFA_TANGENT
                                                          : DD_GFA_SIN2;
    TRY(s, dd_model_set_loss(m, strcmp(o.loss, "mse") == 0 ? DD_LOSS_MSE : DD_LOSS_CE));
    if (gfa) {
        TRY(s, dd_gfa_set_mode(m, gm));
        TRY(s, dd_gfa_hook_spec(m, o.hooks, (float)o.lambda));
    }
    dd_optimizer_options oo;
    dd_optimizer_options_init(&oo, DD_OPTIM_SGD);
    oo.lr = (float)o.lr;
    dd_optimizer *opt = NULL;
    TRY(s, dd_optimizer_create(&opt, m, &oo));
    dd_attack *attack = NULL;
    if (pgd) {
        dd_attack_options ao;
        dd_attack_options_init(&ao, DD_ATTACK_PGD_LINF);
        ao.step_size = 2.5f * ao.eps / (float)ao.steps;         /* Madry */
        ao.seed = (uint64_t)o.seed * 1000003u + (uint64_t)rank; /* its own random starts */
        TRY(s, dd_attack_create(&attack, m, &ao));
    }
    dd_batch_iter_options io;
    dd_batch_iter_options_init(&io);
    io.seed = (uint64_t)o.seed;
    io.num_threads = o.threads;
    io.drop_last = 1;
    io.crop_padding = C == 3 && !o.synthetic ? 4 : 0;
    io.hflip = C == 3 && !o.synthetic;
    TRY(s, dd_mpi_shard_options(d, &io));
    dd_batch_iter *it = NULL;
    TRY(s, dd_batch_iter_create(&it, train, o.batch, &io));
    sync_or_exit(d, s, "setup");
    sync_or_exit(d, dd_mpi_broadcast(d, m, opt), "dd_mpi_broadcast");
    int nb = 0;
    check_or_die(dd_batch_iter_info(it, &nb, NULL), "dd_batch_iter_info");
    check_or_die(dd_mpi_min_int(d, &nb), "dd_mpi_min_int"); /* shard sizes may differ by one */
    if (rank == 0)
        printf("deepdefense %s over MPI: %d ranks x batch %d = global batch %d, %d threads per rank\n"
               "%s, defense %s, %d train images of %dx%dx%d, %d epochs x %d steps, lr %g\n",
               dd_version_string(), size, o.batch, size * o.batch, o.threads, o.arch, o.defense, ntrain, C, H,
               W, o.epochs, nb, o.lr);

    size_t per = (size_t)C * H * W;
    float *x = malloc_or_die((size_t)o.batch * per, sizeof *x);
    float *xadv = malloc_or_die((size_t)o.batch * per, sizeof *xadv);
    int32_t *y = malloc_or_die((size_t)o.batch, sizeof *y);
    dd_lr_schedule sched;
    dd_lr_schedule_init(&sched, DD_SCHED_COSINE, (float)o.lr, (int64_t)o.epochs * nb);
    double t0 = now_seconds();
    for (int epoch = 0; epoch < o.epochs; epoch++) {
        double sums[3] = {0, 0, 0}; /* loss * n, correct, n */
        double te = now_seconds();
        check_or_die(dd_batch_iter_reset(it, epoch), "dd_batch_iter_reset");
        for (int b = 0; b < nb; b++) {
            int n = 0;
            float lr = 0;
            s = dd_batch_iter_next(it, x, y, NULL, &n);
            TRY(s, dd_lr_schedule_eval(&sched, (int64_t)epoch * nb + b, &lr));
            TRY(s, dd_optimizer_set_lr(opt, lr));
            const float *in = x;
            if (pgd) {
                TRY(s, dd_attack_run(attack, x, y, n, xadv, NULL));
                in = xadv;
            }
            dd_step_stats st;
            dd_step_stats_init(&st);
            TRY(s, dd_model_zero_grad(m));
            TRY(s, dd_model_forward(m, in, n, DD_TRAIN, NULL));
            TRY(s, dd_model_backward(m, y, &st));
            dd_status r = dd_mpi_allreduce_grads(d, m, s);
            sync_or_exit(d, r == DD_ERR_REMOTE ? DD_OK : r, "training step"); /* r: every rank knows */
            check_or_die(dd_optimizer_step(opt), "dd_optimizer_step");
            sums[0] += st.loss * n;
            sums[1] += st.correct;
            sums[2] += n;
        }
        MPI_Allreduce(MPI_IN_PLACE, sums, 3, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
        sync_or_exit(d, dd_mpi_average_buffers(d, m), "dd_mpi_average_buffers");
        s = DD_OK;
        double acc = 0;
        if (rank == 0) {
            acc = accuracy_or_die(m, test, 0);
            s = dd_model_save(m, o.out);
        }
        sync_or_exit(d, s, o.out);
        if (rank == 0) {
            printf(
                "epoch %d/%d  loss %.4f  %sacc %.2f%%  test acc %.2f%%  %.1f s (%.0f img/s over %d ranks)  "
                "saved %s\n",
                epoch + 1, o.epochs, sums[0] / sums[2], pgd ? "adv " : "", 100.0 * sums[1] / sums[2],
                100.0 * acc, now_seconds() - te, sums[2] / (now_seconds() - te), size, o.out);
            fflush(stdout);
        }
    }
    if (rank == 0) printf("total training time %.1f s; model saved to %s\n", now_seconds() - t0, o.out);
    free(x);
    free(xadv);
    free(y);
    dd_attack_destroy(attack);
    dd_batch_iter_destroy(it);
    dd_optimizer_destroy(opt);
    dd_model_destroy(m);
    dd_dataset_destroy(train);
    dd_dataset_destroy(test);
    dd_mpi_destroy(d);
    MPI_Finalize();
    return 0;
}
