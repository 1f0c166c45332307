/* lib/io/safetensors.c -- checkpoints as safetensors files.
 *
 * File layout (https://github.com/huggingface/safetensors):
 *   8 bytes   N, little-endian u64
 *   N bytes   JSON header: {"__metadata__":{"format":"pt",
 *               "deepdefense.arch":"<arch JSON>","deepdefense.version":"x.y.z"},
 *             "<param>":{"dtype":"F32","shape":[...],"data_offsets":[b,e]}, ...}
 *             padded with spaces to a multiple of 8, as safetensors writes it
 *   the data  every tensor's bytes, little-endian f32, at [8+N+b, 8+N+e)
 * Tensors are m->params in order (trainable ones and batch-norm running
 * statistics), contiguous, in PyTorch's shapes, so PyTorch reads the file.
 *
 * Saving is atomic: write "<path>.tmp.<pid>", fsync, close, rename over
 * path, fsync the directory. Any failure unlinks the temporary file, so the
 * previous checkpoint stays intact (dd__io_fail_at simulates each failure).
 *
 * Loading treats the file as hostile: sizes come from fstat and every
 * length and offset is checked against them before use (header at most
 * 100 MB, safetensors' own limit); the header is parsed by jansson (a
 * fuzzed parser beats a hand-written one); every entry is validated (F32
 * only, shape, offsets inside the data section, contiguous and covering it
 * exactly as the format requires) and the tensor set must equal the model's.
 * Everything is read and checked before the first parameter is written, so
 * a failed load changes nothing; dd_model_load never returns a half-built
 * model.
 */
#if !defined(_GNU_SOURCE) && !defined(_POSIX_C_SOURCE)
#define _POSIX_C_SOURCE 200809L
#endif

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include <jansson.h>

#include <deepdefense/io.h>
#include <deepdefense/version.h>

#include "io_internal.h"

/* safetensors refuses headers above 100 MB (MAX_HEADER_SIZE); so do we. */
#define ST_MAX_HEADER 100000000ull
#define ST_MAX_DIMS 8
#define ST_ARCH_KEY "deepdefense.arch"

/* ======================================================================== */
/* Small helpers                                                             */
/* ======================================================================== */

/* The fault dd__io_fail_at() asked for; one-shot, per thread. */
static _Thread_local int st_fail_stage;

void dd__io_fail_at(int stage) { st_fail_stage = stage; }

static int st_little_endian(void) {
    const uint32_t one = 1;
    unsigned char b;
    memcpy(&b, &one, 1);
    return b == 1;
}

static uint64_t st_get_u64le(const unsigned char *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

static void st_put_u64le(unsigned char *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (8 * i));
}

/* Float i of a little-endian f32 array. */
static float st_get_f32le(const unsigned char *p, size_t i) {
    uint32_t u = (uint32_t)p[4 * i] | (uint32_t)p[4 * i + 1] << 8 | (uint32_t)p[4 * i + 2] << 16 |
                 (uint32_t)p[4 * i + 3] << 24;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* Thread-safe strerror into buf (either strerror_r flavour). */
static const char *st_strerror(int err, char *buf, size_t size) {
#if defined(__GLIBC__) && defined(_GNU_SOURCE)
    return strerror_r(err, buf, size);
#else
    if (strerror_r(err, buf, size) != 0) snprintf(buf, size, "error %d", err);
    return buf;
#endif
}

static dd_status st_io_error(int err, const char *what, const char *path) {
    char buf[128];
    return DD_ERROR(DD_ERR_IO, "%s '%s': %s", what, path, st_strerror(err, buf, sizeof buf));
}

/* ======================================================================== */
/* Saving                                                                    */
/* ======================================================================== */

/* 8-byte length + padded JSON header; *out from dd__malloc. */
static dd_status st_make_header(const dd_model *m, unsigned char **out, size_t *out_len) {
    *out = NULL;
    char *arch = NULL;
    DD_FORWARD(dd__model_arch_json(m, &arch));

    dd_status s = DD_OK;
    json_t *root = json_object(), *meta = json_object();
    if (!root || !meta || json_object_set_new(meta, "format", json_string("pt")) ||
        json_object_set_new(meta, ST_ARCH_KEY, json_string(arch)) ||
        json_object_set_new(meta, "deepdefense.version", json_string(DD_VERSION_STRING)) ||
        json_object_set(root, "__metadata__", meta))
        s = DD_ERROR(DD_ERR_OUT_OF_MEMORY, "dd_model_save: out of memory");
    dd__free(arch);

    uint64_t offset = 0;
    for (int i = 0; s == DD_OK && i < m->nparams; i++) {
        const dd__param *p = &m->params[i];
        if (json_object_get(root, p->name)) {
            s = DD_ERROR(DD_ERR_INVALID_ARGUMENT, "dd_model_save: two tensors would be named \"%s\"",
                         p->name);
            break;
        }
        json_t *e = json_object(), *shape = json_array(), *offs = json_array();
        int bad = !e || !shape || !offs || json_object_set_new(e, "dtype", json_string("F32"));
        for (int d = 0; !bad && d < p->ndims; d++)
            bad = json_array_append_new(shape, json_integer(p->dims[d]));
        uint64_t end = offset + (uint64_t)p->count * sizeof(float);
        bad = bad || json_array_append_new(offs, json_integer((json_int_t)offset)) ||
              json_array_append_new(offs, json_integer((json_int_t)end)) ||
              json_object_set(e, "shape", shape) || json_object_set(e, "data_offsets", offs) ||
              json_object_set(root, p->name, e);
        json_decref(e);
        json_decref(shape);
        json_decref(offs);
        if (bad) s = DD_ERROR(DD_ERR_OUT_OF_MEMORY, "dd_model_save: out of memory");
        offset = end;
    }

    unsigned char *buf = NULL;
    size_t padded = 0;
    if (s == DD_OK) {
        const size_t flags = JSON_COMPACT | JSON_PRESERVE_ORDER;
        size_t n = json_dumpb(root, NULL, 0, flags);
        padded = (n + 7) / 8 * 8;
        if (n == 0 || !(buf = dd__malloc(8 + padded))) {
            s = DD_ERROR(DD_ERR_OUT_OF_MEMORY, "dd_model_save: out of memory (header)");
        } else if (json_dumpb(root, (char *)buf + 8, n, flags) != n) {
            s = DD_ERROR(DD_ERR_OUT_OF_MEMORY, "dd_model_save: cannot serialise the header");
        } else {
            memset(buf + 8 + n, ' ', padded - n);
            st_put_u64le(buf, padded);
        }
    }
    json_decref(meta);
    json_decref(root);
    if (s != DD_OK) {
        dd__free(buf);
        return s;
    }
    *out = buf;
    *out_len = 8 + padded;
    return DD_OK;
}

/* Writes len bytes; 0 or -1 with errno set. */
static int st_write_all(int fd, const void *data, size_t len) {
    const unsigned char *p = data;
    while (len > 0) {
        /* at most 1 GiB per call: Linux writes at most 0x7ffff000 bytes anyway */
        size_t chunk = len < ((size_t)1 << 30) ? len : ((size_t)1 << 30);
        ssize_t w = write(fd, p, chunk);
        if (w < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        if (w == 0) {
            errno = ENOSPC;
            return -1;
        }
        p += w;
        len -= (size_t)w;
    }
    return 0;
}

/* Writes count floats as little-endian f32. */
static int st_write_f32(int fd, const float *x, size_t count) {
    if (st_little_endian()) return st_write_all(fd, x, count * sizeof(float));
    unsigned char buf[4096];
    while (count > 0) {
        size_t n = count < sizeof buf / 4 ? count : sizeof buf / 4;
        for (size_t i = 0; i < n; i++) {
            uint32_t u;
            memcpy(&u, &x[i], 4);
            for (int b = 0; b < 4; b++) buf[4 * i + (size_t)b] = (unsigned char)(u >> (8 * b));
        }
        if (st_write_all(fd, buf, 4 * n)) return -1;
        x += n;
        count -= n;
    }
    return 0;
}

/* The directory holding path, into dir (room for strlen(path) + 2). */
static void st_dirname(const char *path, char *dir) {
    const char *slash = strrchr(path, '/');
    if (!slash) {
        strcpy(dir, ".");
    } else if (slash == path) {
        strcpy(dir, "/");
    } else {
        memcpy(dir, path, (size_t)(slash - path));
        dir[slash - path] = '\0';
    }
}

/* Syncs a directory, so that a rename inside it is durable. */
static int st_sync_dir(const char *dir) {
    int rc = -1, fd = open(dir, O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        rc = fsync(fd);
        /* Some file systems cannot fsync a directory; nothing more to do there. */
        if (rc != 0 && (errno == EINVAL || errno == ENOTSUP)) rc = 0;
        int e = errno;
        close(fd);
        errno = e;
    }
    return rc;
}

dd_status dd_model_save(const dd_model *m, const char *path) {
    const int fault = st_fail_stage;
    st_fail_stage = 0;
    DD_CHECK_ARG(m);
    DD_CHECK_ARG(path && path[0]);
    DD_RETURN_IF(!m->built, DD_ERR_STATE, "dd_model_save: the model is not built");

    unsigned char *header = NULL;
    size_t header_len = 0;
    DD_FORWARD(st_make_header(m, &header, &header_len));

    /* "<path>.tmp.<pid>"; if that exists (another thread's save of the same
     * path, or a crashed process with our pid), ".tmp.<pid>.<k>". The
     * directory's name is made now too: once the rename is done, nothing may
     * fail for lack of memory. */
    size_t tmp_size = strlen(path) + 48;
    char *tmp = dd__malloc(tmp_size + strlen(path) + 2), *dir = tmp + tmp_size;
    if (!tmp) {
        dd__free(header);
        return DD_ERROR(DD_ERR_OUT_OF_MEMORY, "dd_model_save: out of memory");
    }
    st_dirname(path, dir);
    int fd = -1;
    for (int k = 0; k < 100 && fd < 0; k++) {
        if (k == 0)
            snprintf(tmp, tmp_size, "%s.tmp.%ld", path, (long)getpid());
        else
            snprintf(tmp, tmp_size, "%s.tmp.%ld.%d", path, (long)getpid(), k);
        if (fault == 1) {
            errno = EIO;
            break;
        }
        fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
        if (fd < 0 && errno != EEXIST) break;
    }
    if (fd < 0) {
        dd_status s = st_io_error(errno, "dd_model_save: cannot create", tmp);
        dd__free(tmp);
        dd__free(header);
        return s;
    }

    const char *what = "cannot write", *subject = tmp;
    int failed = st_write_all(fd, header, header_len);
    if (!failed && fault == 2) {
        errno = EIO; /* after the header: a partial file is left to clean up */
        failed = 1;
    }
    for (int i = 0; !failed && i < m->nparams; i++)
        failed = st_write_f32(fd, m->params[i].data, m->params[i].count);
    if (!failed) {
        what = "cannot fsync";
        failed = fault == 3 ? (errno = EIO, 1) : fsync(fd) != 0;
    }
    int err = errno;
    if (close(fd) != 0 && !failed) {
        err = errno;
        what = "cannot close";
        failed = 1;
    }
    if (!failed) {
        what = "cannot rename the temporary file over";
        subject = path;
        failed = fault == 4 ? (err = EIO, 1) : rename(tmp, path) != 0;
        if (failed && fault != 4) err = errno;
    }
    dd__free(header);
    if (failed) {
        unlink(tmp);
        char msg[64];
        snprintf(msg, sizeof msg, "dd_model_save: %s", what);
        dd_status s = st_io_error(err, msg, subject);
        dd__free(tmp);
        return s;
    }
    dd_status s = DD_OK;
    if (st_sync_dir(dir) != 0)
        s = st_io_error(errno,
                        "dd_model_save: checkpoint written, but cannot fsync its "
                        "directory",
                        dir);
    dd__free(tmp);
    return s;
}

/* ======================================================================== */
/* Loading: the header                                                       */
/* ======================================================================== */

typedef struct st_file {
    const char *path;
    int fd;
    uint64_t size;     /* of the whole file (fstat) */
    uint64_t data_off; /* 8 + N */
    uint64_t data_len; /* size - data_off */
    json_t *header;    /* the parsed header, an object */
} st_file;

static void st_close(st_file *f) {
    if (f->fd >= 0) close(f->fd);
    f->fd = -1;
    json_decref(f->header);
    f->header = NULL;
}

/* Reads exactly len bytes at offset; DD_ERR_IO / DD_ERR_FORMAT (file shrank). */
static dd_status st_pread(const st_file *f, void *buf, uint64_t len, uint64_t offset) {
    unsigned char *p = buf;
    while (len > 0) {
        size_t chunk = len < ((uint64_t)1 << 30) ? (size_t)len : ((size_t)1 << 30);
        ssize_t r = pread(f->fd, p, chunk, (off_t)offset);
        if (r < 0) {
            if (errno == EINTR) continue;
            return st_io_error(errno, "cannot read", f->path);
        }
        DD_RETURN_IF(r == 0, DD_ERR_FORMAT,
                     "checkpoint '%s': truncated (end of file at byte %llu while reading)", f->path,
                     (unsigned long long)offset);
        p += r;
        len -= (uint64_t)r;
        offset += (uint64_t)r;
    }
    return DD_OK;
}

static dd_status st_read_header(st_file *f) {
    struct stat sb;
    if (fstat(f->fd, &sb) != 0) return st_io_error(errno, "cannot stat", f->path);
    DD_RETURN_IF(!S_ISREG(sb.st_mode), DD_ERR_IO, "checkpoint '%s': not a regular file", f->path);
    f->size = (uint64_t)sb.st_size;
    DD_RETURN_IF(f->size < 8, DD_ERR_FORMAT,
                 "checkpoint '%s': %llu bytes, too short for the 8-byte header length", f->path,
                 (unsigned long long)f->size);
    unsigned char len8[8];
    DD_FORWARD(st_pread(f, len8, 8, 0));
    uint64_t n = st_get_u64le(len8);
    DD_RETURN_IF(n > ST_MAX_HEADER, DD_ERR_FORMAT,
                 "checkpoint '%s': header length %llu exceeds the %llu-byte limit", f->path,
                 (unsigned long long)n, ST_MAX_HEADER);
    DD_RETURN_IF(n > f->size - 8, DD_ERR_FORMAT,
                 "checkpoint '%s': header length %llu but only %llu bytes follow (truncated?)", f->path,
                 (unsigned long long)n, (unsigned long long)(f->size - 8));
    f->data_off = 8 + n;
    f->data_len = f->size - f->data_off;

    char *text = dd__malloc(n ? (size_t)n : 1);
    DD_RETURN_IF(!text, DD_ERR_OUT_OF_MEMORY,
                 "checkpoint '%s': out of memory (header of %llu "
                 "bytes)",
                 f->path, (unsigned long long)n);
    dd_status s = st_pread(f, text, n, 8);
    if (s != DD_OK) {
        dd__free(text);
        return s;
    }
    json_error_t jerr;
    f->header = json_loadb(text, (size_t)n, JSON_REJECT_DUPLICATES, &jerr);
    dd__free(text);
    if (!f->header) {
        if (json_error_code(&jerr) == json_error_out_of_memory)
            return DD_ERROR(DD_ERR_OUT_OF_MEMORY, "checkpoint '%s': out of memory", f->path);
        /* jansson's position counts from the header's first byte; +8 for the file */
        return DD_ERROR(DD_ERR_FORMAT,
                        "checkpoint '%s': header is not valid JSON at byte %llu: "
                        "%s",
                        f->path, (unsigned long long)jerr.position + 8, jerr.text);
    }
    DD_RETURN_IF(!json_is_object(f->header), DD_ERR_FORMAT, "checkpoint '%s': header is not a JSON object",
                 f->path);

    /* safetensors: "__metadata__" (optional) maps strings to strings */
    json_t *meta = json_object_get(f->header, "__metadata__");
    if (meta) {
        DD_RETURN_IF(!json_is_object(meta), DD_ERR_FORMAT,
                     "checkpoint '%s': \"__metadata__\" is not an object", f->path);
        const char *key;
        json_t *v;
        json_object_foreach(meta, key, v) {
            DD_RETURN_IF(!json_is_string(v), DD_ERR_FORMAT,
                         "checkpoint '%s': metadata \"%.64s\" is not a string", f->path, key);
        }
    }
    return DD_OK;
}

static dd_status st_open(const char *path, st_file *f) {
    memset(f, 0, sizeof *f);
    f->path = path;
    f->fd = open(path, O_RDONLY | O_CLOEXEC);
    if (f->fd < 0) return st_io_error(errno, "cannot open checkpoint", path);
    dd_status s = st_read_header(f);
    if (s != DD_OK) st_close(f);
    return s;
}

/* ======================================================================== */
/* Loading: matching the tensors to the model                                */
/* ======================================================================== */

typedef struct st_span {
    uint64_t begin, end;
} st_span;

static int st_span_cmp(const void *a, const void *b) {
    const st_span *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    return x->end < y->end ? -1 : x->end > y->end;
}

static void st_shape_text(char *buf, size_t size, const int64_t *dims, int ndims) {
    size_t used = (size_t)snprintf(buf, size, "[");
    for (int d = 0; d < ndims && used < size; d++)
        used += (size_t)snprintf(buf + used, size - used, d ? ",%lld" : "%lld", (long long)dims[d]);
    if (used < size) snprintf(buf + used, size - used, "]");
}

/* A non-negative integer of a header entry. */
static int st_uint(json_t *v, uint64_t *out) {
    if (!json_is_integer(v) || json_integer_value(v) < 0) return 0;
    *out = (uint64_t)json_integer_value(v);
    return 1;
}

/* Validates one tensor entry: dtype F32, shape, offsets inside the data
 * section and consistent with the shape. */
static dd_status st_entry(const st_file *f, const char *name, json_t *e, int *ndims,
                          int64_t dims[ST_MAX_DIMS], st_span *span) {
    DD_RETURN_IF(!json_is_object(e), DD_ERR_FORMAT, "checkpoint '%s': tensor \"%s\": entry is not an object",
                 f->path, name);
    json_t *dt = json_object_get(e, "dtype");
    DD_RETURN_IF(!json_is_string(dt), DD_ERR_FORMAT, "checkpoint '%s': tensor \"%s\": missing \"dtype\"",
                 f->path, name);
    DD_RETURN_IF(strcmp(json_string_value(dt), "F32") != 0, DD_ERR_FORMAT,
                 "checkpoint '%s': tensor \"%s\": dtype %.16s (only F32 is supported)", f->path, name,
                 json_string_value(dt));

    json_t *sh = json_object_get(e, "shape");
    DD_RETURN_IF(!json_is_array(sh) || json_array_size(sh) > ST_MAX_DIMS, DD_ERR_FORMAT,
                 "checkpoint '%s': tensor \"%s\": \"shape\" is not an array of at most %d "
                 "integers",
                 f->path, name, ST_MAX_DIMS);
    *ndims = (int)json_array_size(sh);
    uint64_t count = 1;
    for (int d = 0; d < *ndims; d++) {
        uint64_t v;
        /* 2^40 per dimension keeps the products below bounded and exact */
        DD_RETURN_IF(!st_uint(json_array_get(sh, (size_t)d), &v) || v > ((uint64_t)1 << 40), DD_ERR_FORMAT,
                     "checkpoint '%s': tensor \"%s\": shape entry %d is not an "
                     "integer in [0, 2^40]",
                     f->path, name, d);
        dims[d] = (int64_t)v;
        count = (v != 0 && count > UINT64_MAX / 4 / v) ? UINT64_MAX / 4 : count * v;
    }

    json_t *off = json_object_get(e, "data_offsets");
    uint64_t b, en;
    DD_RETURN_IF(!json_is_array(off) || json_array_size(off) != 2 || !st_uint(json_array_get(off, 0), &b) ||
                     !st_uint(json_array_get(off, 1), &en),
                 DD_ERR_FORMAT,
                 "checkpoint '%s': tensor \"%s\": \"data_offsets\" is not two "
                 "non-negative integers",
                 f->path, name);
    DD_RETURN_IF(b > en, DD_ERR_FORMAT,
                 "checkpoint '%s': tensor \"%s\": data_offsets [%llu, %llu] are reversed", f->path, name,
                 (unsigned long long)b, (unsigned long long)en);
    DD_RETURN_IF(en > f->data_len, DD_ERR_FORMAT,
                 "checkpoint '%s': tensor \"%s\": data_offsets end %llu is past the %llu-byte "
                 "data section (truncated?)",
                 f->path, name, (unsigned long long)en, (unsigned long long)f->data_len);
    DD_RETURN_IF(en - b != 4 * count, DD_ERR_FORMAT,
                 "checkpoint '%s': tensor \"%s\": data_offsets span %llu bytes but the shape "
                 "needs %llu",
                 f->path, name, (unsigned long long)(en - b), (unsigned long long)(4 * count));
    span->begin = b;
    span->end = en;
    return DD_OK;
}

/* Checks that the file's tensors are exactly the model's parameters, with
 * the same shapes, and that they tile the data section; spans[i] is where
 * parameter i lies. */
static dd_status st_match(const st_file *f, const dd_model *m, st_span *spans) {
    int found = 0;
    const char *key;
    json_t *e;
    json_object_foreach(f->header, key, e) {
        if (strcmp(key, "__metadata__") == 0) continue;
        int ndims = 0;
        int64_t dims[ST_MAX_DIMS];
        st_span span;
        DD_FORWARD(st_entry(f, key, e, &ndims, dims, &span));
        int pi = -1;
        for (int i = 0; i < m->nparams && pi < 0; i++)
            if (strcmp(m->params[i].name, key) == 0) pi = i;
        DD_RETURN_IF(pi < 0, DD_ERR_FORMAT,
                     "checkpoint '%s': tensor \"%.96s\" is not a parameter of the model", f->path, key);
        const dd__param *p = &m->params[pi];
        int same = ndims == p->ndims;
        for (int d = 0; same && d < ndims; d++) same = dims[d] == p->dims[d];
        if (!same) {
            char have[160], want[160];
            st_shape_text(have, sizeof have, dims, ndims);
            st_shape_text(want, sizeof want, p->dims, p->ndims);
            return DD_ERROR(DD_ERR_FORMAT,
                            "checkpoint '%s': tensor \"%s\" has shape %s, the "
                            "model expects %s",
                            f->path, key, have, want);
        }
        spans[pi] = span;
        found++;
    }
    if (found != m->nparams) {
        for (int i = 0; i < m->nparams; i++)
            DD_RETURN_IF(!json_object_get(f->header, m->params[i].name), DD_ERR_FORMAT,
                         "checkpoint '%s': tensor \"%s\" is missing", f->path, m->params[i].name);
    }

    /* safetensors requires the tensors to tile the data section: no overlap,
     * no hole (a hole could hide a second file), nothing after the end */
    if (m->nparams == 0) {
        DD_RETURN_IF(f->data_len != 0, DD_ERR_FORMAT,
                     "checkpoint '%s': %llu bytes of data follow the header but there are no "
                     "tensors",
                     f->path, (unsigned long long)f->data_len);
        return DD_OK;
    }
    st_span *sorted = dd__malloc((size_t)m->nparams * sizeof *sorted);
    DD_RETURN_IF(!sorted, DD_ERR_OUT_OF_MEMORY, "checkpoint '%s': out of memory", f->path);
    memcpy(sorted, spans, (size_t)m->nparams * sizeof *sorted);
    qsort(sorted, (size_t)m->nparams, sizeof *sorted, st_span_cmp);
    uint64_t at = 0;
    int ok = 1;
    for (int i = 0; i < m->nparams && ok; i++) {
        ok = sorted[i].begin == at;
        at = sorted[i].end;
    }
    dd__free(sorted);
    DD_RETURN_IF(!ok, DD_ERR_FORMAT, "checkpoint '%s': tensor data_offsets overlap or leave a hole", f->path);
    DD_RETURN_IF(at != f->data_len, DD_ERR_FORMAT,
                 "checkpoint '%s': the tensors use %llu bytes but the data section has %llu", f->path,
                 (unsigned long long)at, (unsigned long long)f->data_len);
    return DD_OK;
}

/* Reads the data section, checks every value is finite, then copies it into
 * the parameters. Nothing is written before everything is checked. */
static dd_status st_fill(const st_file *f, dd_model *m) {
    st_span *spans = dd__calloc((size_t)m->nparams + 1, sizeof *spans);
    DD_RETURN_IF(!spans, DD_ERR_OUT_OF_MEMORY, "checkpoint '%s': out of memory", f->path);
    dd_status s = st_match(f, m, spans);
    unsigned char *data = NULL;
    if (s == DD_OK && f->data_len > (uint64_t)SIZE_MAX)
        s = DD_ERROR(DD_ERR_OUT_OF_MEMORY, "checkpoint '%s': data section too large", f->path);
    if (s == DD_OK && !(data = dd__malloc(f->data_len ? (size_t)f->data_len : 1)))
        s = DD_ERROR(DD_ERR_OUT_OF_MEMORY, "checkpoint '%s': out of memory (%llu bytes of data)", f->path,
                     (unsigned long long)f->data_len);
    if (s == DD_OK) s = st_pread(f, data, f->data_len, f->data_off);
    for (int i = 0; s == DD_OK && i < m->nparams; i++) {
        const dd__param *p = &m->params[i];
        const unsigned char *src = data + spans[i].begin;
        for (size_t j = 0; j < p->count; j++) {
            if (!isfinite(st_get_f32le(src, j))) {
                s = DD_ERROR(DD_ERR_FORMAT,
                             "checkpoint '%s': tensor \"%s\" holds a non-finite "
                             "value at index %zu",
                             f->path, p->name, j);
                break;
            }
        }
    }
    for (int i = 0; s == DD_OK && i < m->nparams; i++) {
        dd__param *p = &m->params[i];
        const unsigned char *src = data + spans[i].begin;
        if (st_little_endian())
            memcpy(p->data, src, p->count * sizeof(float));
        else
            for (size_t j = 0; j < p->count; j++) p->data[j] = st_get_f32le(src, j);
    }
    if (s == DD_OK) dd__model_params_changed(m);
    dd__free(data);
    dd__free(spans);
    return s;
}

/* ======================================================================== */
/* Public entry points                                                       */
/* ======================================================================== */

dd_status dd_model_load_weights(dd_model *m, const char *path) {
    DD_CHECK_ARG(m);
    DD_CHECK_ARG(path);
    DD_RETURN_IF(!m->built, DD_ERR_STATE, "dd_model_load_weights: the model is not built");
    st_file f;
    DD_FORWARD(st_open(path, &f));
    dd_status s = st_fill(&f, m);
    st_close(&f);
    return s;
}

dd_status dd_model_load_ex(const char *path, const dd_model_options *opts, int max_batch, dd_model **out) {
    DD_CHECK_ARG(out);
    *out = NULL;
    DD_CHECK_ARG(path);
    DD_RETURN_IF(max_batch < 0, DD_ERR_INVALID_ARGUMENT,
                 "dd_model_load_ex: max_batch = %d (0 = the saved one)", max_batch);
    st_file f;
    DD_FORWARD(st_open(path, &f));
    json_t *arch = json_object_get(json_object_get(f.header, "__metadata__"), ST_ARCH_KEY);
    if (!arch) {
        st_close(&f);
        return DD_ERROR(DD_ERR_FORMAT,
                        "checkpoint '%s': no \"%s\" metadata (not written by "
                        "libdeepdefense? build the model and use dd_model_load_weights)",
                        path, ST_ARCH_KEY);
    }
    dd_model *m = NULL;
    dd_status s = dd__model_from_arch_limited(json_string_value(arch), json_string_length(arch), opts,
                                              max_batch, f.data_len, &m);
    if (s == DD_ERR_FORMAT) {
        char why[512];
        snprintf(why, sizeof why, "%s", dd_last_error());
        s = DD_ERROR(DD_ERR_FORMAT, "checkpoint '%s': %s", path, why);
    }
    if (s == DD_OK) s = st_fill(&f, m);
    st_close(&f);
    if (s != DD_OK) {
        dd_model_destroy(m);
        return s;
    }
    *out = m;
    return DD_OK;
}

dd_status dd_model_load(const char *path, dd_model **out) { return dd_model_load_ex(path, NULL, 0, out); }
