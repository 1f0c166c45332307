/* lib/data/cifar10.c -- the CIFAR-10 binary format.
 *
 * A CIFAR-10 binary file ("cifar-10-batches-bin") is a sequence of 3073-byte
 * records: one label byte (0-9), then 3072 pixel bytes, the 32x32 red plane,
 * then green, then blue, each row-major. The pixels of a record are thus
 * already one (3, 32, 32) NCHW image, so they are appended to the dataset's
 * uint8 storage as read and converted to float only when a batch is taken
 * out (a quarter of the memory of float storage: 150 MB for the 50,000
 * training images).
 *
 * Records are read one at a time through the dd__reader, so gzip input works
 * the same way, and the storage grows with the records actually present
 * (to the file's size at once for plain files, whose size is known). The
 * file has no header, so validation is per record: a label above 9 or a
 * final partial record (a size that is not a multiple of 3073) is
 * DD_ERR_FORMAT with the file name and the record's byte offset; an empty
 * file is DD_ERR_FORMAT too. The training split is data_batch_1..5.bin
 * concatenated in that order, the order of the official Python loaders.
 */
#include <string.h>

#include "data_internal.h"

#define DD_CIFAR_C 3
#define DD_CIFAR_H 32
#define DD_CIFAR_W 32
#define DD_CIFAR_CLASSES 10
#define DD_CIFAR_PIXELS (DD_CIFAR_C * DD_CIFAR_H * DD_CIFAR_W)
#define DD_CIFAR_RECORD (1 + DD_CIFAR_PIXELS)
#define DD_CIFAR_TRAIN_FILES 5

dd_status dd__cifar10_read(dd__reader *r, dd__grow *pixels, dd__grow *labels, size_t *n) {
    size_t records = 0;
    for (;;) {
        uint64_t at = r->offset;
        unsigned char label;
        size_t got;
        DD_FORWARD(dd__reader_read(r, &label, 1, &got));
        if (got == 0) break;
        DD_RETURN_IF(label >= DD_CIFAR_CLASSES, DD_ERR_FORMAT,
                     "%s: label %u > 9 in the record at byte offset %llu%s", r->name, (unsigned)label,
                     (unsigned long long)at, r->gz ? " (decompressed)" : "");
        DD_RETURN_IF(*n + records >= (size_t)DD_DATASET_MAX_SAMPLES, DD_ERR_FORMAT,
                     "%s: more than %d records at byte offset %llu", r->name, DD_DATASET_MAX_SAMPLES,
                     (unsigned long long)at);
        DD_FORWARD(dd__grow_read(pixels, r, DD_CIFAR_PIXELS, &got));
        DD_RETURN_IF(got != DD_CIFAR_PIXELS, DD_ERR_FORMAT,
                     "%s: truncated: the record at byte offset %llu%s has %zu of %d bytes "
                     "(size is not a multiple of %d)",
                     r->name, (unsigned long long)at, r->gz ? " (decompressed)" : "", got + 1,
                     DD_CIFAR_RECORD, DD_CIFAR_RECORD);
        int32_t lab = label;
        DD_FORWARD(dd__grow_reserve(labels, sizeof lab, -1));
        memcpy(labels->data + labels->size, &lab, sizeof lab);
        labels->size += sizeof lab;
        records++;
    }
    DD_RETURN_IF(records == 0, DD_ERR_FORMAT, "%s: empty file: no CIFAR-10 records at byte offset 0",
                 r->name);
    *n += records;
    return DD_OK;
}

/* Wraps what was read into a dataset (takes both buffers). */
static dd_status dd_cifar_finish(dd_dataset **out, dd__grow *pixels, dd__grow *labels, size_t n) {
    void *px = dd__grow_take(pixels);
    int32_t *lab = dd__grow_take(labels);
    return dd__dataset_wrap(out, DD__PIXELS_U8, px, lab, (int)n, DD_CIFAR_C, DD_CIFAR_H, DD_CIFAR_W,
                            DD_CIFAR_CLASSES);
}

/* Appends the records of the file at path. */
static dd_status dd_cifar_read_file(const char *path, dd__grow *pixels, dd__grow *labels, size_t *n) {
    dd__reader r;
    DD_FORWARD(dd__reader_open_file(&r, path));
    dd_status st = dd__cifar10_read(&r, pixels, labels, n);
    dd__reader_close(&r);
    return st;
}

dd_status dd_dataset_open_cifar10_file(dd_dataset **out, const char *path) {
    DD_CHECK_ARG(out != NULL);
    *out = NULL;
    DD_CHECK_ARG(path != NULL);
    dd__grow pixels = {0}, labels = {0};
    size_t n = 0;
    dd_status st = dd_cifar_read_file(path, &pixels, &labels, &n);
    if (st != DD_OK) {
        dd__grow_free(&pixels);
        dd__grow_free(&labels);
        return st;
    }
    return dd_cifar_finish(out, &pixels, &labels, n);
}

dd_status dd_dataset_open_cifar10_memory(dd_dataset **out, const void *data, size_t size) {
    DD_CHECK_ARG(out != NULL);
    *out = NULL;
    DD_CHECK_ARG(data != NULL || size == 0);
    dd__reader r;
    DD_FORWARD(dd__reader_open_memory(&r, data, size, "<memory>"));
    dd__grow pixels = {0}, labels = {0};
    size_t n = 0;
    dd_status st = dd__cifar10_read(&r, &pixels, &labels, &n);
    dd__reader_close(&r);
    if (st != DD_OK) {
        dd__grow_free(&pixels);
        dd__grow_free(&labels);
        return st;
    }
    return dd_cifar_finish(out, &pixels, &labels, n);
}

dd_status dd_dataset_open_cifar10(dd_dataset **out, const char *dir, dd_split split) {
    DD_CHECK_ARG(out != NULL);
    *out = NULL;
    DD_CHECK_ARG(dir != NULL);
    DD_RETURN_IF(split != DD_SPLIT_TRAIN && split != DD_SPLIT_TEST, DD_ERR_INVALID_ARGUMENT,
                 "dd_dataset_open_cifar10: unknown split %d", (int)split);
    size_t len = strlen(dir);
    /* "/data_batch_N.bin" is the longest name. */
    char *path = dd__malloc(len + 32);
    DD_RETURN_IF(path == NULL, DD_ERR_OUT_OF_MEMORY, "dd_dataset_open_cifar10: no memory");
    dd__grow pixels = {0}, labels = {0};
    size_t n = 0;
    dd_status st = DD_OK;
    int files = split == DD_SPLIT_TRAIN ? DD_CIFAR_TRAIN_FILES : 1;
    for (int i = 0; i < files && st == DD_OK; i++) {
        memcpy(path, dir, len);
        if (split == DD_SPLIT_TRAIN)
            snprintf(path + len, 32, "/data_batch_%d.bin", i + 1);
        else
            snprintf(path + len, 32, "/test_batch.bin");
        st = dd_cifar_read_file(path, &pixels, &labels, &n);
    }
    dd__free(path);
    if (st != DD_OK) {
        dd__grow_free(&pixels);
        dd__grow_free(&labels);
        return st;
    }
    st = dd_cifar_finish(out, &pixels, &labels, n);
    if (st == DD_OK)
        dd__log(DD_LOG_INFO, "CIFAR-10 %s split: %zu images from %s",
                split == DD_SPLIT_TRAIN ? "train" : "test", n, dir);
    return st;
}
