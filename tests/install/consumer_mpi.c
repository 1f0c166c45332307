/* tests/install/consumer_mpi.c -- a program that links an installed
 * libdeepdefense_mpi (see run_install_test.sh): one rank, MPI initialised
 * by the host, a gradient average over a communicator of one. */
#include <stdio.h>

#include <deepdefense/deepdefense.h>
#include <deepdefense/mpi.h>

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    dd_mpi *d = NULL;
    dd_model *m = NULL;
    int rank = -1, size = 0, ok = 1;
    ok = ok && dd_mpi_create(&d, MPI_COMM_WORLD) == DD_OK;
    ok = ok && dd_mpi_info(d, &rank, &size) == DD_OK && rank == 0 && size >= 1;
    ok = ok && dd_zoo_create(&m, "mlp", 1, 4, 4, 3, 0, NULL, NULL, 2, NULL) == DD_OK;
    ok = ok && dd_mpi_broadcast(d, m, NULL) == DD_OK;
    ok = ok && dd_mpi_allreduce_grads(d, m, DD_OK) == DD_OK;
    ok = ok && dd_mpi_allreduce_grads(d, m, DD_ERR_NUMERIC) == DD_ERR_NUMERIC;
    dd_model_destroy(m);
    dd_mpi_destroy(d);
    MPI_Finalize();
    printf("%s\n", ok ? "mpi consumer ok" : "mpi consumer FAILED");
    return ok ? 0 : 1;
}
