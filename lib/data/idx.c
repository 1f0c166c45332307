/* lib/data/idx.c -- the IDX format of MNIST and Fashion-MNIST.
 *
 * An IDX file is a 4-byte magic (two zero bytes, an element type code, the
 * number of dimensions), one big-endian uint32 per dimension, then the
 * elements in row-major order. An images file is unsigned bytes (type
 * 0x08) of 3 dimensions (N, rows, cols); a labels file is unsigned bytes of
 * 1 dimension (N). The image bytes are exactly the (N, 1, rows, cols) NCHW
 * uint8 storage of a dataset, so they are read straight into it.
 *
 * Both headers are read and checked before any payload, so inconsistent
 * counts fail before a large read; then the payloads are read through the
 * growing buffer (a header's N is untrusted: allocation follows the bytes
 * really present) and each file must end exactly where its header says.
 * Element types other than unsigned byte are valid IDX but not images we
 * read: DD_ERR_UNSUPPORTED; every other defect is DD_ERR_FORMAT with the
 * file and byte offset. K is 1 + the largest label (10 for both MNIST and
 * Fashion-MNIST).
 */
#include <string.h>

#include "data_internal.h"

#define DD_IDX_UBYTE 0x08

typedef struct dd_idx_header {
    int ndims;
    uint32_t dims[3];
} dd_idx_header;

static const char *dd_idx_type_name(unsigned code) {
    switch (code) {
    case 0x09:
        return "signed byte";
    case 0x0B:
        return "int16";
    case 0x0C:
        return "int32";
    case 0x0D:
        return "float32";
    case 0x0E:
        return "float64";
    default:
        return NULL;
    }
}

/* Reads and checks the header of r: unsigned bytes, `ndims` dimensions,
 * each >= 1. what ("images" / "labels") is for messages. */
static dd_status dd_idx_read_header(dd__reader *r, int ndims, const char *what, dd_idx_header *h) {
    const char *z = r->gz ? " (decompressed)" : "";
    unsigned char magic[4];
    size_t got;
    DD_FORWARD(dd__reader_read(r, magic, 4, &got));
    DD_RETURN_IF(got < 4, DD_ERR_FORMAT, "%s: truncated IDX header: %zu bytes at byte offset 0%s", r->name,
                 got, z);
    DD_RETURN_IF(magic[0] != 0 || magic[1] != 0, DD_ERR_FORMAT,
                 "%s: not an IDX file: magic %02x %02x %02x %02x at byte offset 0%s", r->name, magic[0],
                 magic[1], magic[2], magic[3], z);
    if (magic[2] != DD_IDX_UBYTE) {
        const char *type = dd_idx_type_name(magic[2]);
        DD_RETURN_IF(type != NULL, DD_ERR_UNSUPPORTED,
                     "%s: IDX %s data (type 0x%02x at byte offset 2); only unsigned bytes "
                     "(0x08) are read",
                     r->name, type, magic[2]);
        return DD_ERROR(DD_ERR_FORMAT, "%s: unknown IDX type code 0x%02x at byte offset 2%s", r->name,
                        magic[2], z);
    }
    DD_RETURN_IF(magic[3] != ndims, DD_ERR_FORMAT,
                 "%s: IDX %s file with %u dimensions at byte offset 3%s; expected %d", r->name, what,
                 magic[3], z, ndims);
    h->ndims = ndims;
    for (int i = 0; i < ndims; i++) {
        unsigned char b[4];
        DD_FORWARD(dd__reader_read(r, b, 4, &got));
        DD_RETURN_IF(got < 4, DD_ERR_FORMAT, "%s: truncated IDX header at byte offset %d%s", r->name,
                     4 + 4 * i + (int)got, z);
        h->dims[i] = (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3];
        DD_RETURN_IF(h->dims[i] == 0, DD_ERR_FORMAT, "%s: dimension %d is 0 at byte offset %d%s", r->name, i,
                     4 + 4 * i, z);
    }
    DD_RETURN_IF(h->dims[0] > (uint32_t)DD_DATASET_MAX_SAMPLES, DD_ERR_FORMAT,
                 "%s: %u %s at byte offset 4%s: more than the limit %d", r->name, h->dims[0], what, z,
                 DD_DATASET_MAX_SAMPLES);
    if (ndims == 3) {
        uint64_t pixels = (uint64_t)h->dims[1] * h->dims[2];
        DD_RETURN_IF(pixels > (uint64_t)DD_DATASET_MAX_IMAGE, DD_ERR_FORMAT,
                     "%s: images of %u x %u (byte offset 8%s) exceed the limit of %d pixels", r->name,
                     h->dims[1], h->dims[2], z, DD_DATASET_MAX_IMAGE);
    }
    return DD_OK;
}

/* Reads exactly `bytes` payload bytes into g, then requires the end of r. */
static dd_status dd_idx_read_payload(dd__reader *r, dd__grow *g, uint64_t bytes, const char *what) {
    DD_RETURN_IF(bytes > SIZE_MAX, DD_ERR_FORMAT, "%s: %llu bytes of %s do not fit in memory", r->name,
                 (unsigned long long)bytes, what);
    uint64_t start = r->offset;
    size_t got;
    DD_FORWARD(dd__grow_read(g, r, (size_t)bytes, &got));
    DD_RETURN_IF(got < bytes, DD_ERR_FORMAT,
                 "%s: truncated: %s data ends at byte offset %llu%s, the header needs %llu bytes "
                 "from byte offset %llu",
                 r->name, what, (unsigned long long)(start + got), r->gz ? " (decompressed)" : "",
                 (unsigned long long)bytes, (unsigned long long)start);
    return dd__reader_expect_end(r);
}

/* Reads both files from two open readers into a new dataset. */
static dd_status dd_idx_read(dd_dataset **out, dd__reader *ri, dd__reader *rl) {
    dd_idx_header hi, hl;
    DD_FORWARD(dd_idx_read_header(ri, 3, "images", &hi));
    DD_FORWARD(dd_idx_read_header(rl, 1, "labels", &hl));
    DD_RETURN_IF(hi.dims[0] != hl.dims[0], DD_ERR_FORMAT,
                 "%s: %u labels (byte offset 4) but %s holds %u images", rl->name, hl.dims[0], ri->name,
                 hi.dims[0]);
    uint32_t n = hi.dims[0];
    uint64_t per_image = (uint64_t)hi.dims[1] * hi.dims[2];

    dd__grow pixels = {0}, labels = {0};
    int32_t *lab = NULL;
    dd_status st = dd_idx_read_payload(ri, &pixels, per_image * n, "image");
    if (st == DD_OK) st = dd_idx_read_payload(rl, &labels, n, "label");
    if (st == DD_OK) {
        lab = dd__malloc((size_t)n * sizeof *lab);
        if (lab == NULL) st = DD_ERROR(DD_ERR_OUT_OF_MEMORY, "%s: no memory for %u labels", rl->name, n);
    }
    if (st != DD_OK) {
        dd__grow_free(&pixels);
        dd__grow_free(&labels);
        return st;
    }
    int k = 0;
    for (uint32_t i = 0; i < n; i++) {
        lab[i] = labels.data[i];
        if (lab[i] + 1 > k) k = lab[i] + 1;
    }
    dd__grow_free(&labels);
    void *px = dd__grow_take(&pixels);
    return dd__dataset_wrap(out, DD__PIXELS_U8, px, lab, (int)n, 1, (int)hi.dims[1], (int)hi.dims[2], k);
}

dd_status dd_dataset_open_idx(dd_dataset **out, const char *images_path, const char *labels_path) {
    DD_CHECK_ARG(out != NULL);
    *out = NULL;
    DD_CHECK_ARG(images_path != NULL);
    DD_CHECK_ARG(labels_path != NULL);
    dd__reader ri, rl;
    DD_FORWARD(dd__reader_open_file(&ri, images_path));
    dd_status st = dd__reader_open_file(&rl, labels_path);
    if (st != DD_OK) {
        dd__reader_close(&ri);
        return st;
    }
    st = dd_idx_read(out, &ri, &rl);
    dd__reader_close(&ri);
    dd__reader_close(&rl);
    if (st == DD_OK)
        dd__log(DD_LOG_INFO, "IDX dataset: %d images of %d x %d from %s", (*out)->n, (*out)->h, (*out)->w,
                images_path);
    return st;
}

dd_status dd_dataset_open_idx_memory(dd_dataset **out, const void *images, size_t images_size,
                                     const void *labels, size_t labels_size) {
    DD_CHECK_ARG(out != NULL);
    *out = NULL;
    DD_CHECK_ARG(images != NULL || images_size == 0);
    DD_CHECK_ARG(labels != NULL || labels_size == 0);
    dd__reader ri, rl;
    DD_FORWARD(dd__reader_open_memory(&ri, images, images_size, "<images>"));
    dd_status st = dd__reader_open_memory(&rl, labels, labels_size, "<labels>");
    if (st != DD_OK) {
        dd__reader_close(&ri);
        return st;
    }
    st = dd_idx_read(out, &ri, &rl);
    dd__reader_close(&ri);
    dd__reader_close(&rl);
    return st;
}
