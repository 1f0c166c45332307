/* lib/data/dataset.c -- the dataset handle: storage, views, sample access,
 * and finding a dataset in a directory.
 *
 * Samples live in a dd__store: pixels (N, C, H, W) NCHW as uint8 (files and
 * dd_dataset_from_memory_u8; v means v / 255) or f32 (dd_dataset_from_memory,
 * kept bit-exact), labels (N) int32. A store is immutable once built and
 * carries an atomic reference count; every dd_dataset handle (a dataset, a
 * subset, an iterator's private view) is a window [first, first + n) onto
 * one store holding one reference. Subsets therefore cost no copy, handles
 * may be destroyed in any order, and handles sharing a store may be used
 * from different threads at once (only the count is ever written).
 *
 * dd__dataset_sample() is the single place where pixels become the float
 * [0, 1] images of the API; the conversion v / 255.0f is an IEEE division
 * (correctly rounded), so tests can predict every value exactly.
 *
 * dd_dataset_open_auto() only looks for files by name and then delegates
 * to the CIFAR-10 or IDX opener, which validate the contents.
 */
#include <math.h>
#include <string.h>

#include "data_internal.h"

/* ---- storage and handles -------------------------------------------------- */

static void dd_store_release(dd__store *s) {
    if (s == NULL) return;
    if (atomic_fetch_sub_explicit(&s->refs, 1, memory_order_acq_rel) == 1) {
        dd__free(s->pixels);
        dd__free(s->labels);
        dd__free(s);
    }
}

dd_status dd__dataset_wrap(dd_dataset **out, dd__pixel_kind kind, void *pixels, int32_t *labels, int n, int c,
                           int h, int w, int k) {
    *out = NULL;
    dd__store *s = NULL;
    dd_dataset *ds = NULL;
    if (pixels == NULL || labels == NULL) goto oom;
    s = dd__malloc(sizeof *s);
    ds = dd__malloc(sizeof *ds);
    if (s == NULL || ds == NULL) goto oom;
    atomic_init(&s->refs, 1);
    s->kind = kind;
    s->pixels = pixels;
    s->labels = labels;
    s->n = (size_t)n;
    ds->store = s;
    ds->first = 0;
    ds->n = n;
    ds->c = c;
    ds->h = h;
    ds->w = w;
    ds->k = k;
    *out = ds;
    return DD_OK;
oom:
    dd__free(s);
    dd__free(ds);
    dd__free(pixels);
    dd__free(labels);
    return DD_ERROR(DD_ERR_OUT_OF_MEMORY, "no memory for a dataset of %d images", n);
}

dd_status dd__dataset_view(dd_dataset **out, const dd_dataset *ds, int start, int count) {
    *out = NULL;
    dd_dataset *v = dd__malloc(sizeof *v);
    DD_RETURN_IF(v == NULL, DD_ERR_OUT_OF_MEMORY, "no memory for a dataset view");
    *v = *ds;
    v->first = ds->first + (size_t)start;
    v->n = count;
    atomic_fetch_add_explicit(&ds->store->refs, 1, memory_order_relaxed);
    *out = v;
    return DD_OK;
}

void dd__dataset_sample(const dd_dataset *ds, int i, float *dst) {
    size_t chw = (size_t)ds->c * ds->h * ds->w;
    size_t at = (ds->first + (size_t)i) * chw;
    if (ds->store->kind == DD__PIXELS_U8) {
        const uint8_t *src = (const uint8_t *)ds->store->pixels + at;
        for (size_t j = 0; j < chw; j++) dst[j] = (float)src[j] / 255.0f;
    } else {
        memcpy(dst, (const float *)ds->store->pixels + at, chw * sizeof *dst);
    }
}

void dd_dataset_destroy(dd_dataset *ds) {
    if (ds == NULL) return;
    dd_store_release(ds->store);
    dd__free(ds);
}

/* ---- from host memory ------------------------------------------------------- */

/* Checks the arguments common to both from_memory variants; *bytes_per is the
 * number of elements of one image. */
static dd_status dd_check_shape(const void *x, const int32_t *labels, int n, int c, int h, int w,
                                int num_classes, size_t elem, size_t *count) {
    DD_CHECK_ARG(x != NULL);
    DD_CHECK_ARG(labels != NULL);
    DD_RETURN_IF(n < 1 || c < 1 || h < 1 || w < 1 || num_classes < 1, DD_ERR_INVALID_ARGUMENT,
                 "dd_dataset_from_memory: sizes must be >= 1 (n %d, c %d, h %d, w %d, classes %d)", n, c, h,
                 w, num_classes);
    uint64_t chw = (uint64_t)c * (uint64_t)h * (uint64_t)w;
    DD_RETURN_IF(chw > (uint64_t)DD_DATASET_MAX_IMAGE, DD_ERR_INVALID_ARGUMENT,
                 "dd_dataset_from_memory: images of %d x %d x %d exceed %d elements", c, h, w,
                 DD_DATASET_MAX_IMAGE);
    uint64_t total = chw * (uint64_t)n;
    DD_RETURN_IF(total > SIZE_MAX / elem, DD_ERR_INVALID_ARGUMENT,
                 "dd_dataset_from_memory: %d images do not fit in memory", n);
    for (int i = 0; i < n; i++)
        DD_RETURN_IF(labels[i] < 0 || labels[i] >= num_classes, DD_ERR_INVALID_ARGUMENT,
                     "dd_dataset_from_memory: label %d of sample %d is outside [0, %d)", (int)labels[i], i,
                     num_classes);
    *count = (size_t)total;
    return DD_OK;
}

static dd_status dd_copy_labels(int32_t **out, const int32_t *labels, int n) {
    *out = dd__malloc((size_t)n * sizeof **out);
    DD_RETURN_IF(*out == NULL, DD_ERR_OUT_OF_MEMORY, "no memory for %d labels", n);
    memcpy(*out, labels, (size_t)n * sizeof **out);
    return DD_OK;
}

dd_status dd_dataset_from_memory(dd_dataset **out, const float *x, const int32_t *labels, int n, int c, int h,
                                 int w, int num_classes) {
    DD_CHECK_ARG(out != NULL);
    *out = NULL;
    size_t count;
    DD_FORWARD(dd_check_shape(x, labels, n, c, h, w, num_classes, sizeof(float), &count));
    for (size_t j = 0; j < count; j++) {
        DD_RETURN_IF(!isfinite(x[j]), DD_ERR_NUMERIC,
                     "dd_dataset_from_memory: pixel %zu (sample %zu) is not finite", j,
                     j / (count / (size_t)n));
        DD_RETURN_IF(x[j] < 0.0f || x[j] > 1.0f, DD_ERR_INVALID_ARGUMENT,
                     "dd_dataset_from_memory: pixel %zu (sample %zu) = %g is outside [0, 1]", j,
                     j / (count / (size_t)n), (double)x[j]);
    }
    float *px = dd__malloc(count * sizeof *px);
    DD_RETURN_IF(px == NULL, DD_ERR_OUT_OF_MEMORY, "no memory for %d images", n);
    memcpy(px, x, count * sizeof *px);
    int32_t *lab;
    dd_status st = dd_copy_labels(&lab, labels, n);
    if (st != DD_OK) {
        dd__free(px);
        return st;
    }
    return dd__dataset_wrap(out, DD__PIXELS_F32, px, lab, n, c, h, w, num_classes);
}

dd_status dd_dataset_from_memory_u8(dd_dataset **out, const uint8_t *x, const int32_t *labels, int n, int c,
                                    int h, int w, int num_classes) {
    DD_CHECK_ARG(out != NULL);
    *out = NULL;
    size_t count;
    DD_FORWARD(dd_check_shape(x, labels, n, c, h, w, num_classes, 1, &count));
    uint8_t *px = dd__malloc(count);
    DD_RETURN_IF(px == NULL, DD_ERR_OUT_OF_MEMORY, "no memory for %d images", n);
    memcpy(px, x, count);
    int32_t *lab;
    dd_status st = dd_copy_labels(&lab, labels, n);
    if (st != DD_OK) {
        dd__free(px);
        return st;
    }
    return dd__dataset_wrap(out, DD__PIXELS_U8, px, lab, n, c, h, w, num_classes);
}

/* ---- subsets and reading ------------------------------------------------------ */

dd_status dd_dataset_subset(dd_dataset **out, const dd_dataset *ds, int start, int count) {
    DD_CHECK_ARG(out != NULL);
    *out = NULL;
    DD_CHECK_ARG(ds != NULL);
    DD_RETURN_IF(count < 1 || start < 0 || start > ds->n - count, DD_ERR_INVALID_ARGUMENT,
                 "dd_dataset_subset: [%d, %d + %d) is not a non-empty range of the %d samples", start, start,
                 count, ds->n);
    return dd__dataset_view(out, ds, start, count);
}

dd_status dd_dataset_info(const dd_dataset *ds, int *n, int *c, int *h, int *w, int *k) {
    DD_CHECK_ARG(ds != NULL);
    if (n != NULL) *n = ds->n;
    if (c != NULL) *c = ds->c;
    if (h != NULL) *h = ds->h;
    if (w != NULL) *w = ds->w;
    if (k != NULL) *k = ds->k;
    return DD_OK;
}

dd_status dd_dataset_get(const dd_dataset *ds, const int32_t *indices, int count, float *x_out,
                         int32_t *labels_out) {
    DD_CHECK_ARG(ds != NULL);
    DD_CHECK_ARG(count >= 0);
    DD_CHECK_ARG(indices != NULL || count == 0);
    for (int i = 0; i < count; i++)
        DD_RETURN_IF(indices[i] < 0 || indices[i] >= ds->n, DD_ERR_INVALID_ARGUMENT,
                     "dd_dataset_get: indices[%d] = %d is outside [0, %d)", i, (int)indices[i], ds->n);
    size_t chw = (size_t)ds->c * ds->h * ds->w;
    for (int i = 0; i < count; i++) {
        if (x_out != NULL) dd__dataset_sample(ds, indices[i], x_out + (size_t)i * chw);
        if (labels_out != NULL) labels_out[i] = ds->store->labels[ds->first + (size_t)indices[i]];
    }
    return DD_OK;
}

dd_status dd_dataset_get_range(const dd_dataset *ds, int start, int count, float *x_out,
                               int32_t *labels_out) {
    DD_CHECK_ARG(ds != NULL);
    DD_RETURN_IF(count < 0 || start < 0 || start > ds->n - count, DD_ERR_INVALID_ARGUMENT,
                 "dd_dataset_get_range: [%d, %d + %d) is outside the %d samples", start, start, count, ds->n);
    size_t chw = (size_t)ds->c * ds->h * ds->w;
    for (int i = 0; i < count; i++) {
        if (x_out != NULL) dd__dataset_sample(ds, start + i, x_out + (size_t)i * chw);
        if (labels_out != NULL) labels_out[i] = ds->store->labels[ds->first + (size_t)(start + i)];
    }
    return DD_OK;
}

/* ---- finding a dataset in a directory -------------------------------------------- */

/* dir + "/" + name in a new buffer (NULL when out of memory). */
static char *dd_join(const char *dir, const char *name) {
    size_t a = strlen(dir), b = strlen(name);
    char *p = dd__malloc(a + b + 2);
    if (p != NULL) {
        memcpy(p, dir, a);
        p[a] = '/';
        memcpy(p + a + 1, name, b + 1);
    }
    return p;
}

static int dd_file_exists(const char *path) {
    FILE *f = fopen(path, "rb");
    if (f == NULL) return 0;
    fclose(f);
    return 1;
}

/* 1 if dir/name exists, 0 if not, -1 when out of memory. */
static int dd_has(const char *dir, const char *name) {
    char *p = dd_join(dir, name);
    if (p == NULL) return -1;
    int r = dd_file_exists(p);
    dd__free(p);
    return r;
}

/* The first existing dir/<prefix>-<kind>-idx<d>-ubyte variant ("-" or "."
 * before idx, optional .gz) in *path (caller frees); *path NULL if none. */
static dd_status dd_find_idx(const char *dir, const char *prefix, const char *kind, int d, char **path) {
    static const char *const seps[2] = {"-", "."};
    static const char *const exts[2] = {"", ".gz"};
    char name[64];
    *path = NULL;
    for (int s = 0; s < 2; s++)
        for (int e = 0; e < 2; e++) {
            snprintf(name, sizeof name, "%s-%s%sidx%d-ubyte%s", prefix, kind, seps[s], d, exts[e]);
            char *p = dd_join(dir, name);
            DD_RETURN_IF(p == NULL, DD_ERR_OUT_OF_MEMORY, "dd_dataset_open_auto: no memory");
            if (dd_file_exists(p)) {
                *path = p;
                return DD_OK;
            }
            dd__free(p);
        }
    return DD_OK;
}

/* CIFAR-10 in dir itself: 1 found, 0 not, -1 out of memory. */
static int dd_is_cifar(const char *dir, dd_split split) {
    return dd_has(dir, split == DD_SPLIT_TRAIN ? "data_batch_1.bin" : "test_batch.bin");
}

dd_status dd_dataset_open_auto(dd_dataset **out, const char *dir, dd_split split) {
    DD_CHECK_ARG(out != NULL);
    *out = NULL;
    DD_CHECK_ARG(dir != NULL);
    DD_RETURN_IF(split != DD_SPLIT_TRAIN && split != DD_SPLIT_TEST, DD_ERR_INVALID_ARGUMENT,
                 "dd_dataset_open_auto: unknown split %d", (int)split);
    const char *cifar_name = split == DD_SPLIT_TRAIN ? "data_batch_1.bin" : "test_batch.bin";

    int found = dd_is_cifar(dir, split);
    DD_RETURN_IF(found < 0, DD_ERR_OUT_OF_MEMORY, "dd_dataset_open_auto: no memory");
    if (found) return dd_dataset_open_cifar10(out, dir, split);
    char *sub = dd_join(dir, "cifar-10-batches-bin");
    DD_RETURN_IF(sub == NULL, DD_ERR_OUT_OF_MEMORY, "dd_dataset_open_auto: no memory");
    found = dd_is_cifar(sub, split);
    if (found > 0) {
        dd_status st = dd_dataset_open_cifar10(out, sub, split);
        dd__free(sub);
        return st;
    }
    dd__free(sub);
    DD_RETURN_IF(found < 0, DD_ERR_OUT_OF_MEMORY, "dd_dataset_open_auto: no memory");

    const char *prefix = split == DD_SPLIT_TRAIN ? "train" : "t10k";
    char *images, *labels;
    DD_FORWARD(dd_find_idx(dir, prefix, "images", 3, &images));
    if (images != NULL) {
        dd_status st = dd_find_idx(dir, prefix, "labels", 1, &labels);
        if (st == DD_OK && labels == NULL)
            st = DD_ERROR(DD_ERR_IO, "%s/%s-labels-idx1-ubyte[.gz]: not found (images file %s)", dir, prefix,
                          images);
        if (st == DD_OK) st = dd_dataset_open_idx(out, images, labels);
        dd__free(images);
        dd__free(labels);
        return st;
    }

    char xz_name[32];
    snprintf(xz_name, sizeof xz_name, "%s.xz", cifar_name);
    int xz = dd_has(dir, xz_name);
    DD_RETURN_IF(xz < 0, DD_ERR_OUT_OF_MEMORY, "dd_dataset_open_auto: no memory");
    DD_RETURN_IF(xz > 0, DD_ERR_IO,
                 "%s: only xz-compressed CIFAR-10 files (%s); decompress them first with "
                 "xz -dk %s/*.bin.xz",
                 dir, xz_name, dir);
    return DD_ERROR(DD_ERR_IO,
                    "%s: no dataset found: looked for %s (CIFAR-10, also in "
                    "cifar-10-batches-bin/) and %s-images-idx3-ubyte[.gz] (IDX)",
                    dir, cifar_name, prefix);
}
