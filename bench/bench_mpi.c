/* bench/bench_mpi.c -- data-parallel step throughput over MPI.
 *
 *   mpirun -np 2 bench_mpi --threads 1        2 ranks x 1 thread
 *   mpirun -np 1 bench_mpi --threads 2        1 process x 2 threads
 *
 * cnn-cw (or --arch), global batch --batch (default 128) split over the
 * ranks, plain and GFA steps (zero_grad, forward, backward, gradient
 * average, SGD step): images/s of the whole job, and the share of the step
 * spent in dd_mpi_allreduce_grads (its message size printed beside). The
 * allreduce time includes waiting for the slowest rank. Synthetic inputs;
 * --steps timed steps after 2 untimed ones.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <deepdefense/deepdefense.h>
#include <deepdefense/mpi.h>

#define OK(call)                                                 \
    do {                                                         \
        dd_status s_ = (call);                                   \
        if (s_ != DD_OK) {                                       \
            fprintf(stderr, "%s: %s\n", #call, dd_last_error()); \
            MPI_Abort(MPI_COMM_WORLD, 1);                        \
        }                                                        \
    } while (0)

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    const char *arch = "cnn-cw";
    int threads = 1, batch = 128, steps = 10;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--threads") == 0)
            threads = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--batch") == 0)
            batch = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--steps") == 0)
            steps = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--arch") == 0)
            arch = argv[i + 1];
    }
    dd_mpi *d = NULL;
    OK(dd_mpi_create(&d, MPI_COMM_WORLD));
    int rank, size;
    OK(dd_mpi_info(d, &rank, &size));
    int n = batch / size;
    dd_model_options o;
    dd_model_options_init(&o);
    o.num_threads = threads;
    dd_model *m = NULL;
    OK(dd_zoo_create(&m, arch, 3, 32, 32, 10, 1, NULL, NULL, n, &o));
    dd_optimizer_options oo;
    dd_optimizer_options_init(&oo, DD_OPTIM_SGD);
    oo.lr = 1e-4f; /* timing only: small steps keep the repeated batch from diverging */
    dd_optimizer *opt = NULL;
    OK(dd_optimizer_create(&opt, m, &oo));
    OK(dd_mpi_broadcast(d, m, opt));
    float *x = malloc((size_t)n * 3 * 32 * 32 * sizeof(float));
    int32_t *y = malloc((size_t)n * sizeof(int32_t));
    for (size_t i = 0; i < (size_t)n * 3 * 32 * 32; i++) x[i] = (float)((i * 2654435761u) % 1000) / 1000.0f;
    for (int i = 0; i < n; i++) y[i] = (i + rank) % 10;
    float *g;
    size_t ng;
    OK(dd_model_grad_buffer(m, &g, &ng));
    for (int gfa = 0; gfa < 2; gfa++) {
        if (gfa) OK(dd_gfa_hook_defaults(m, 0.05f, DD_GFA_SIN2));
        double t_all = 0, t_red = 0;
        for (int s = 0; s < steps + 2; s++) {
            MPI_Barrier(MPI_COMM_WORLD);
            double t0 = MPI_Wtime();
            OK(dd_model_zero_grad(m));
            OK(dd_model_forward(m, x, n, DD_TRAIN, NULL));
            OK(dd_model_backward(m, y, NULL));
            double t1 = MPI_Wtime();
            OK(dd_mpi_allreduce_grads(d, m, DD_OK));
            double t2 = MPI_Wtime();
            OK(dd_optimizer_step(opt));
            double t3 = MPI_Wtime();
            if (s >= 2) {
                t_all += t3 - t0;
                t_red += t2 - t1;
            }
        }
        double mx[2] = {t_all, t_red};
        MPI_Allreduce(MPI_IN_PLACE, mx, 2, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
        if (rank == 0)
            printf("%s %s step: %d ranks x %d threads, global batch %d: %.1f ms/step, %.0f img/s, "
                   "allreduce %.1f%% of the step (%.2f MB)\n",
                   arch, gfa ? "GFA  " : "plain", size, threads, n * size, 1e3 * mx[0] / steps,
                   steps * (double)n * size / mx[0], 100.0 * mx[1] / mx[0], ng * 4.0 / 1e6);
    }
    free(x);
    free(y);
    dd_optimizer_destroy(opt);
    dd_model_destroy(m);
    dd_mpi_destroy(d);
    MPI_Finalize();
    return 0;
}
