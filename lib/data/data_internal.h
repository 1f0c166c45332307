/* lib/data/data_internal.h -- what the files of lib/data share.
 *
 * store   (dataset.c): the immutable, reference-counted samples behind every
 *         dd_dataset, subset and iterator; pixels as uint8 (v / 255) or f32.
 * reader  (reader.c): a byte stream over a file or a memory block that
 *         inflates gzip input transparently and counts decompressed offsets
 *         for error messages.
 * grow    (reader.c): reading a known or unknown number of bytes into a
 *         buffer that grows with the data actually read, so hostile headers
 *         cannot force large allocations.
 * augment (augment.c): per-sample crop/flip draws and their application.
 */
#ifndef DD_LIB_DATA_INTERNAL_H
#define DD_LIB_DATA_INTERNAL_H

#include <stdatomic.h>
#include <stdio.h>

#include <zlib.h>

#include "../core/core.h"
#include <deepdefense/data.h>

/* ---- sample storage (dataset.c) ------------------------------------------ */

typedef enum dd__pixel_kind { DD__PIXELS_U8 = 0, DD__PIXELS_F32 = 1 } dd__pixel_kind;

/* Samples: pixels (n, c, h, w) NCHW, uint8 or f32; labels (n) int32. */
typedef struct dd__store {
    atomic_long refs;
    dd__pixel_kind kind;
    void *pixels;
    int32_t *labels;
    size_t n;
} dd__store;

struct dd_dataset {
    dd__store *store; /* shared, immutable */
    size_t first;     /* index of this handle's sample 0 in the store */
    int n, c, h, w, k;
};

/* Takes ownership of pixels and labels (dd__malloc'ed), also on failure,
 * and wraps them into a new dataset handle with one reference. */
DD_INTERNAL dd_status dd__dataset_wrap(dd_dataset **out, dd__pixel_kind kind, void *pixels, int32_t *labels,
                                       int n, int c, int h, int w, int k);
/* A new handle on the same store: samples [start, start + count) of ds. */
DD_INTERNAL dd_status dd__dataset_view(dd_dataset **out, const dd_dataset *ds, int start, int count);
/* Writes sample i (handle-relative, unchecked) as f32 NCHW (c, h, w) into dst. */
DD_INTERNAL void dd__dataset_sample(const dd_dataset *ds, int i, float *dst);

/* ---- byte reader (reader.c) ---------------------------------------------- */

#define DD__READER_CHUNK 65536

typedef struct dd__reader {
    const char *name;         /* file name for messages (borrowed) */
    FILE *file;               /* NULL for memory input */
    const unsigned char *mem; /* memory input */
    size_t mem_size, mem_pos;
    int gz;      /* gzip stream detected */
    int gz_done; /* the last gzip member ended and no input follows */
    int zinit;   /* zs initialised */
    z_stream zs;
    unsigned char *inbuf;  /* file input buffer, DD__READER_CHUNK bytes */
    size_t in_len, in_pos; /* plain file: bytes buffered and consumed */
    int in_eof;            /* no more raw input */
    uint64_t raw_read;     /* file: raw bytes read from the file so far */
    int64_t size_hint;     /* plain input: total bytes; -1 unknown (gzip, pipes) */
    uint64_t offset;       /* (decompressed) bytes delivered so far */
} dd__reader;

/* Opens path for reading (DD_ERR_IO naming it when it cannot be opened). */
DD_INTERNAL dd_status dd__reader_open_file(dd__reader *r, const char *path);
/* Reads from a borrowed memory block; name is used in messages. */
DD_INTERNAL dd_status dd__reader_open_memory(dd__reader *r, const void *data, size_t size, const char *name);
/* Reads up to size bytes into dst; *got < size only at the end of the data.
 * DD_ERR_IO on a read error, DD_ERR_FORMAT on a corrupt or truncated gzip
 * stream (naming the file and offsets). */
DD_INTERNAL dd_status dd__reader_read(dd__reader *r, void *dst, size_t size, size_t *got);
/* Fails with DD_ERR_FORMAT ("trailing bytes") unless the data is at its end. */
DD_INTERNAL dd_status dd__reader_expect_end(dd__reader *r);
DD_INTERNAL void dd__reader_close(dd__reader *r);
/* Bytes the input can still deliver when known (plain input), else -1. */
DD_INTERNAL int64_t dd__reader_remaining_hint(const dd__reader *r);

/* A buffer that grows geometrically as data arrives (dd__realloc). */
typedef struct dd__grow {
    unsigned char *data;
    size_t size, cap;
} dd__grow;

/* Makes room for `extra` more bytes: to size + hint when hint >= 0 (what
 * the input can still deliver), else doubling from 64 KiB; never less than
 * size + extra. */
DD_INTERNAL dd_status dd__grow_reserve(dd__grow *g, size_t extra, int64_t hint);
/* Appends up to want bytes from r to g, growing g with the data actually
 * delivered (to a plain input's known remaining size, else by doubling), so
 * a large `want` from an untrusted header costs at most about twice the
 * bytes really present; *got as in dd__reader_read. */
DD_INTERNAL dd_status dd__grow_read(dd__grow *g, dd__reader *r, size_t want, size_t *got);
/* Shrinks g to its size (failure to shrink is harmless) and hands the
 * buffer over: returns it and empties g. */
DD_INTERNAL void *dd__grow_take(dd__grow *g);
DD_INTERNAL void dd__grow_free(dd__grow *g);

/* ---- readers of the formats (cifar10.c, idx.c) ----------------------------- */

/* Appends the CIFAR-10 records of r to pixels/labels (both dd__grow; labels
 * hold int32), counting records in *n. */
DD_INTERNAL dd_status dd__cifar10_read(dd__reader *r, dd__grow *pixels, dd__grow *labels, size_t *n);

/* ---- augmentation (augment.c) --------------------------------------------- */

/* A 64-bit mixing function (splitmix64 finaliser). */
static inline uint64_t dd__mix64(uint64_t z) {
    z += 0x9e3779b97f4a7c15ULL;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

typedef struct dd__augment_draw {
    int dy, dx; /* crop window offset in [0, 2p] */
    int flip;   /* 1: mirror left-right */
} dd__augment_draw;

/* The draws of sample `index` in epoch `epoch` under seed (pad = crop
 * padding p, hflip 0/1). Pure function of its arguments. */
DD_INTERNAL dd__augment_draw dd__augment_draw_for(uint64_t seed, uint64_t epoch, uint64_t index, int pad,
                                                  int hflip);
/* dst (c, h, w) = crop/flip of src (c, h, w) per draw d with padding pad.
 * src and dst must not overlap. */
DD_INTERNAL void dd__augment_apply(const float *src, float *dst, int c, int h, int w, int pad,
                                   dd__augment_draw d);

#endif
