/* lib/mpi/mpi.c -- libdeepdefense_mpi: data-parallel training over MPI.
 *
 * Built as its own shared library; it uses libdeepdefense through the
 * public API only (the gradient buffer, parameter read/write, optimizer
 * state blobs), so the core library never sees MPI. Every collective
 * starts with dd_mpi_agree(): one MPI_Allreduce of an int (the lowest
 * failing rank), and only after a failure a broadcast of its status, so
 * that a rank that failed locally makes the others return instead of
 * waiting in the next collective. The gradient
 * average is one in-place MPI_Allreduce (MPI_SUM) of the whole contiguous
 * buffer (a few MB for the zoo models: a single large message is what MPI
 * implementations move fastest), then a scale by 1/size.
 */
#include <deepdefense/mpi.h>

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct dd_mpi {
    MPI_Comm comm; /* private duplicate, MPI_ERRORS_RETURN */
    int rank, size;
};

/* An MPI error as a dd_status with MPI's own text. */
static dd_status mpi_fail(int rc, const char *what) {
    char text[MPI_MAX_ERROR_STRING];
    int len = 0;
    if (MPI_Error_string(rc, text, &len) != MPI_SUCCESS) snprintf(text, sizeof text, "error %d", rc);
    return dd_set_last_error(DD_ERR_BACKEND, "%s: MPI failed: %s", what, text);
}

dd_status dd_mpi_create(dd_mpi **out, MPI_Comm comm) {
    if (!out) return dd_set_last_error(DD_ERR_INVALID_ARGUMENT, "dd_mpi_create: out is NULL");
    *out = NULL;
    int init = 0, fin = 0;
    MPI_Initialized(&init);
    MPI_Finalized(&fin);
    if (!init || fin)
        return dd_set_last_error(DD_ERR_STATE, "dd_mpi_create: MPI is %s",
                                 fin ? "already finalised" : "not initialised (call MPI_Init first)");
    dd_mpi *d = calloc(1, sizeof *d);
    if (!d) return dd_set_last_error(DD_ERR_OUT_OF_MEMORY, "dd_mpi_create: out of memory");
    int rc = MPI_Comm_dup(comm, &d->comm);
    if (rc != MPI_SUCCESS) {
        free(d);
        return mpi_fail(rc, "dd_mpi_create: MPI_Comm_dup");
    }
    MPI_Comm_set_errhandler(d->comm, MPI_ERRORS_RETURN);
    MPI_Comm_rank(d->comm, &d->rank);
    MPI_Comm_size(d->comm, &d->size);
    *out = d;
    return DD_OK;
}

void dd_mpi_destroy(dd_mpi *d) {
    if (!d) return;
    MPI_Comm_free(&d->comm);
    free(d);
}

dd_status dd_mpi_info(const dd_mpi *d, int *rank, int *size) {
    if (!d) return dd_set_last_error(DD_ERR_INVALID_ARGUMENT, "dd_mpi_info: d is NULL");
    if (rank) *rank = d->rank;
    if (size) *size = d->size;
    return DD_OK;
}

dd_status dd_mpi_agree(dd_mpi *d, dd_status local) {
    if (!d) return dd_set_last_error(DD_ERR_INVALID_ARGUMENT, "dd_mpi_agree: d is NULL");
    /* the lowest failing rank (size if none), then that rank's status */
    int mine = local != DD_OK ? d->rank : d->size, first = d->size;
    int rc = MPI_Allreduce(&mine, &first, 1, MPI_INT, MPI_MIN, d->comm);
    if (rc != MPI_SUCCESS) return mpi_fail(rc, "dd_mpi_agree");
    if (first == d->size) return DD_OK;
    int code = (int)local;
    rc = MPI_Bcast(&code, 1, MPI_INT, first, d->comm);
    if (rc != MPI_SUCCESS) return mpi_fail(rc, "dd_mpi_agree");
    if (local != DD_OK) return local;
    return dd_set_last_error(DD_ERR_REMOTE, "rank %d of %d failed (%s); see its own message", first, d->size,
                             dd_status_string((dd_status)code));
}

/* Agrees on local and on value being equal on every rank. */
static dd_status agree_equal(dd_mpi *d, dd_status local, long long value, const char *what) {
    dd_status s = dd_mpi_agree(d, local);
    if (s != DD_OK) return s;
    long long mm[2] = {value, -value}, r[2];
    int rc = MPI_Allreduce(mm, r, 2, MPI_LONG_LONG, MPI_MAX, d->comm);
    if (rc != MPI_SUCCESS) return mpi_fail(rc, what);
    if (r[0] != -r[1])
        return dd_set_last_error(DD_ERR_INVALID_ARGUMENT,
                                 "%s: the ranks disagree (%lld here, from %lld to %lld)", what, value, -r[1],
                                 r[0]);
    return DD_OK;
}

dd_status dd_mpi_allreduce_grads(dd_mpi *d, dd_model *m, dd_status local) {
    if (!d) return dd_set_last_error(DD_ERR_INVALID_ARGUMENT, "dd_mpi_allreduce_grads: d is NULL");
    float *g = NULL;
    size_t count = 0;
    if (local == DD_OK)
        local = m ? dd_model_grad_buffer(m, &g, &count)
                  : dd_set_last_error(DD_ERR_INVALID_ARGUMENT, "dd_mpi_allreduce_grads: m is NULL");
    dd_status s = agree_equal(d, local, (long long)count, "dd_mpi_allreduce_grads: gradient floats");
    if (s != DD_OK) return s;
    if (d->size == 1) return DD_OK;
    /* MPI counts are int: large buffers go in chunks */
    const size_t chunk = (size_t)1 << 30;
    for (size_t off = 0; off < count; off += chunk) {
        int n = (int)(count - off < chunk ? count - off : chunk);
        int rc = MPI_Allreduce(MPI_IN_PLACE, g + off, n, MPI_FLOAT, MPI_SUM, d->comm);
        if (rc != MPI_SUCCESS) return mpi_fail(rc, "dd_mpi_allreduce_grads: MPI_Allreduce");
    }
    const float inv = 1.0f / (float)d->size;
    for (size_t i = 0; i < count; i++) g[i] *= inv;
    return DD_OK;
}

/* The parameters with trainable == want (1, 0) or all (-1), packed. */
static dd_status pack(dd_model *m, int want, float **buf, size_t *floats, int write) {
    int np = 0;
    dd_status s = dd_model_num_params(m, &np);
    size_t total = 0;
    for (int i = 0; s == DD_OK && i < np; i++) {
        dd_param_info pi;
        memset(&pi, 0, sizeof pi);
        s = dd_model_param_info(m, i, &pi);
        if (s != DD_OK || (want >= 0 && pi.trainable != want)) continue;
        if (write)
            s = dd_model_param_write(m, i, *buf + total, pi.count);
        else if (*buf)
            s = dd_model_param_read(m, i, *buf + total, pi.count);
        total += pi.count;
    }
    *floats = total;
    return s;
}

/* Reads (write = 0) or writes back (write = 1) the selected parameters. */
static dd_status params_io(dd_model *m, int want, float **buf, size_t *floats, int write) {
    if (write) return pack(m, want, buf, floats, 1);
    *buf = NULL;
    dd_status s = pack(m, want, buf, floats, 0); /* the size */
    if (s != DD_OK) return s;
    *buf = malloc((*floats ? *floats : 1) * sizeof(float));
    if (!*buf) return dd_set_last_error(DD_ERR_OUT_OF_MEMORY, "MPI: %zu floats of parameters", *floats);
    return pack(m, want, buf, floats, 0);
}

dd_status dd_mpi_broadcast(dd_mpi *d, dd_model *m, dd_optimizer *opt) {
    if (!d) return dd_set_last_error(DD_ERR_INVALID_ARGUMENT, "dd_mpi_broadcast: d is NULL");
    float *buf = NULL;
    size_t floats = 0, obytes = 0;
    dd_status local = m ? params_io(m, -1, &buf, &floats, 0)
                        : dd_set_last_error(DD_ERR_INVALID_ARGUMENT, "dd_mpi_broadcast: m is NULL");
    if (local == DD_OK && opt) local = dd_optimizer_state_size(opt, &obytes);
    dd_status s = agree_equal(d, local, (long long)floats, "dd_mpi_broadcast: parameter floats");
    if (s == DD_OK)
        s = agree_equal(d, DD_OK, opt ? (long long)obytes : -1, "dd_mpi_broadcast: optimizer state bytes");
    unsigned char *blob = NULL;
    if (s == DD_OK) {
        int rc = MPI_Bcast(buf, (int)floats, MPI_FLOAT, 0, d->comm);
        local = rc == MPI_SUCCESS ? DD_OK : mpi_fail(rc, "dd_mpi_broadcast: parameters");
        if (local == DD_OK && d->rank != 0) local = params_io(m, -1, &buf, &floats, 1);
        if (local == DD_OK && opt) {
            blob = malloc(obytes ? obytes : 1);
            local = blob ? dd_optimizer_state_read(opt, blob, obytes)
                         : dd_set_last_error(DD_ERR_OUT_OF_MEMORY, "dd_mpi_broadcast: optimizer state");
        }
        s = dd_mpi_agree(d, local);
    }
    if (s == DD_OK && opt) {
        int rc = MPI_Bcast(blob, (int)obytes, MPI_BYTE, 0, d->comm);
        local = rc == MPI_SUCCESS ? DD_OK : mpi_fail(rc, "dd_mpi_broadcast: optimizer state");
        if (local == DD_OK && d->rank != 0) local = dd_optimizer_state_write(opt, blob, obytes);
        s = dd_mpi_agree(d, local);
    }
    free(blob);
    free(buf);
    return s;
}

dd_status dd_mpi_average_buffers(dd_mpi *d, dd_model *m) {
    if (!d) return dd_set_last_error(DD_ERR_INVALID_ARGUMENT, "dd_mpi_average_buffers: d is NULL");
    float *buf = NULL;
    size_t floats = 0;
    dd_status local = m ? params_io(m, 0, &buf, &floats, 0)
                        : dd_set_last_error(DD_ERR_INVALID_ARGUMENT, "dd_mpi_average_buffers: m is NULL");
    dd_status s = agree_equal(d, local, (long long)floats, "dd_mpi_average_buffers: buffer floats");
    if (s == DD_OK && floats > 0 && d->size > 1) {
        int rc = MPI_Allreduce(MPI_IN_PLACE, buf, (int)floats, MPI_FLOAT, MPI_SUM, d->comm);
        local = rc == MPI_SUCCESS ? DD_OK : mpi_fail(rc, "dd_mpi_average_buffers");
        for (size_t i = 0; local == DD_OK && i < floats; i++) buf[i] /= (float)d->size;
        if (local == DD_OK) local = params_io(m, 0, &buf, &floats, 1);
        s = dd_mpi_agree(d, local);
    }
    free(buf);
    return s;
}

dd_status dd_mpi_shard_options(const dd_mpi *d, dd_batch_iter_options *opts) {
    if (!d || !opts) return dd_set_last_error(DD_ERR_INVALID_ARGUMENT, "dd_mpi_shard_options: NULL argument");
    if (opts->struct_size < offsetof(dd_batch_iter_options, shard) + sizeof opts->shard)
        return dd_set_last_error(DD_ERR_INVALID_ARGUMENT,
                                 "dd_mpi_shard_options: opts->struct_size %zu (fill opts with "
                                 "dd_batch_iter_options_init)",
                                 opts->struct_size);
    opts->num_shards = d->size;
    opts->shard = d->rank;
    return DD_OK;
}

dd_status dd_mpi_min_int(dd_mpi *d, int *value) {
    if (!d || !value) return dd_set_last_error(DD_ERR_INVALID_ARGUMENT, "dd_mpi_min_int: NULL argument");
    int rc = MPI_Allreduce(MPI_IN_PLACE, value, 1, MPI_INT, MPI_MIN, d->comm);
    return rc == MPI_SUCCESS ? DD_OK : mpi_fail(rc, "dd_mpi_min_int");
}
