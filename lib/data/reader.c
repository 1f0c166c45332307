/* lib/data/reader.c -- byte streams for the dataset readers: file or memory,
 * plain or gzip, with offsets for error messages and bounded allocation.
 *
 * The first two bytes decide the encoding: 1f 8b (the gzip magic) starts a
 * zlib inflate stream (windowBits 16 + 15: gzip wrapper, CRC-32 and length
 * checked at the end of each member), anything else is read as is; a file's
 * name never matters. Concatenated gzip members are read in sequence, as
 * gzip(1) does; anything after the last member, a corrupt or a truncated
 * stream is a format error. zlib allocates through dd__malloc, so
 * allocation-failure injection covers it. Every error names the file and
 * the byte offset (for gzip, in both the decompressed and compressed data).
 *
 * dd__grow reads data whose size comes from an untrusted header (or is
 * unknown) into a buffer that grows with the bytes actually delivered: at
 * once to the size left in a plain input of known size (real data, never a
 * header's claim), otherwise by doubling from 64 KiB. A header that claims
 * 2^40 bytes therefore costs at most twice the data really present.
 */
#include <errno.h>
#include <limits.h>
#include <string.h>

#include "data_internal.h"

/* First capacity of a growing buffer whose final size is unknown: large
 * enough that small datasets need one allocation, small enough to be
 * harmless when a hostile header lies. */
#define DD_GROW_MIN ((size_t)1 << 16)

/* ---- zlib allocation hooks ---------------------------------------------- */

static voidpf dd_zalloc(voidpf opaque, uInt items, uInt size) {
    (void)opaque;
    if (size != 0 && items > SIZE_MAX / size) return Z_NULL;
    return dd__malloc((size_t)items * size);
}

static void dd_zfree(voidpf opaque, voidpf p) {
    (void)opaque;
    dd__free(p);
}

/* ---- opening ------------------------------------------------------------- */

static dd_status dd_reader_start_gz(dd__reader *r) {
    memset(&r->zs, 0, sizeof r->zs);
    r->zs.zalloc = dd_zalloc;
    r->zs.zfree = dd_zfree;
    r->zs.opaque = Z_NULL;
    int zr = inflateInit2(&r->zs, 16 + MAX_WBITS);
    if (zr == Z_MEM_ERROR)
        return DD_ERROR(DD_ERR_OUT_OF_MEMORY, "%s: cannot start gzip decompression", r->name);
    DD_RETURN_IF(zr != Z_OK, DD_ERR_FORMAT, "%s: cannot start gzip decompression (zlib %d)", r->name, zr);
    r->zinit = 1;
    r->gz = 1;
    return DD_OK;
}

/* Bytes of raw input given to zlib so far (compressed offset). */
static uint64_t dd_raw_consumed(const dd__reader *r) {
    if (r->file != NULL) return r->raw_read - r->zs.avail_in;
    return (uint64_t)(r->mem_pos - r->zs.avail_in);
}

dd_status dd__reader_open_file(dd__reader *r, const char *path) {
    memset(r, 0, sizeof *r);
    r->name = path;
    r->size_hint = -1;
    r->file = fopen(path, "rb");
    if (r->file == NULL) {
        int e = errno;
        return DD_ERROR(DD_ERR_IO, "%s: cannot open: %s", path, strerror(e));
    }
    dd_status st = DD_OK;
    r->inbuf = dd__malloc(DD__READER_CHUNK);
    if (r->inbuf == NULL) {
        st = DD_ERROR(DD_ERR_OUT_OF_MEMORY, "%s: no memory for the read buffer", path);
        goto fail;
    }
    /* The file's size bounds what a plain read can deliver (pipes have none). */
    if (fseek(r->file, 0, SEEK_END) == 0) {
        long end = ftell(r->file);
        if (end >= 0) r->size_hint = (int64_t)end;
        if (fseek(r->file, 0, SEEK_SET) != 0) {
            int e = errno;
            st = DD_ERROR(DD_ERR_IO, "%s: cannot seek: %s", path, strerror(e));
            goto fail;
        }
    }
    r->in_len = fread(r->inbuf, 1, DD__READER_CHUNK, r->file);
    if (r->in_len < DD__READER_CHUNK) {
        if (ferror(r->file)) {
            st = DD_ERROR(DD_ERR_IO, "%s: read error at byte offset 0", path);
            goto fail;
        }
        r->in_eof = 1;
    }
    r->raw_read = r->in_len;
    if (r->in_len >= 2 && r->inbuf[0] == 0x1f && r->inbuf[1] == 0x8b) {
        st = dd_reader_start_gz(r);
        if (st != DD_OK) goto fail;
        r->zs.next_in = r->inbuf;
        r->zs.avail_in = (uInt)r->in_len;
        r->size_hint = -1;
    }
    return DD_OK;
fail:
    dd__reader_close(r);
    return st;
}

dd_status dd__reader_open_memory(dd__reader *r, const void *data, size_t size, const char *name) {
    memset(r, 0, sizeof *r);
    r->name = name;
    r->mem = data;
    r->mem_size = size;
    r->size_hint = (int64_t)size;
    if (size >= 2 && r->mem[0] == 0x1f && r->mem[1] == 0x8b) {
        DD_FORWARD(dd_reader_start_gz(r));
        r->size_hint = -1;
    }
    return DD_OK;
}

void dd__reader_close(dd__reader *r) {
    if (r == NULL) return;
    if (r->zinit) inflateEnd(&r->zs);
    if (r->file != NULL) fclose(r->file);
    dd__free(r->inbuf);
    memset(r, 0, sizeof *r);
}

/* ---- reading -------------------------------------------------------------- */

/* Gives zlib more raw input if it has none; *more = 0 when none is left. */
static dd_status dd_reader_refill(dd__reader *r, int *more) {
    *more = 1;
    if (r->zs.avail_in > 0) return DD_OK;
    if (r->file != NULL) {
        if (r->in_eof) {
            *more = 0;
            return DD_OK;
        }
        size_t got = fread(r->inbuf, 1, DD__READER_CHUNK, r->file);
        if (got < DD__READER_CHUNK) {
            DD_RETURN_IF(ferror(r->file), DD_ERR_IO, "%s: read error at compressed byte offset %llu", r->name,
                         (unsigned long long)r->raw_read);
            r->in_eof = 1;
        }
        r->raw_read += got;
        r->zs.next_in = r->inbuf;
        r->zs.avail_in = (uInt)got;
        *more = got > 0;
        return DD_OK;
    }
    size_t left = r->mem_size - r->mem_pos;
    /* avail_in is an unsigned int: feed huge blocks in pieces. */
    size_t piece = left < (size_t)UINT_MAX ? left : (size_t)UINT_MAX;
    r->zs.next_in = (Bytef *)(uintptr_t)(r->mem + r->mem_pos);
    r->zs.avail_in = (uInt)piece;
    r->mem_pos += piece;
    *more = piece > 0;
    return DD_OK;
}

static dd_status dd_reader_read_gz(dd__reader *r, unsigned char *dst, size_t size, size_t *got) {
    size_t done = 0;
    while (done < size && !r->gz_done) {
        int more;
        DD_FORWARD(dd_reader_refill(r, &more));
        size_t want = size - done;
        r->zs.next_out = dst + done;
        r->zs.avail_out = want < (size_t)UINT_MAX ? (uInt)want : UINT_MAX;
        uInt before = r->zs.avail_out;
        int zr = inflate(&r->zs, Z_NO_FLUSH);
        done += before - r->zs.avail_out;
        r->offset += before - r->zs.avail_out;
        if (zr == Z_STREAM_END) {
            /* End of a member: another may follow (concatenated gzip). */
            DD_FORWARD(dd_reader_refill(r, &more));
            if (!more) {
                r->gz_done = 1;
                break;
            }
            DD_RETURN_IF(inflateReset(&r->zs) != Z_OK, DD_ERR_FORMAT,
                         "%s: cannot restart gzip decompression at compressed byte offset %llu", r->name,
                         (unsigned long long)dd_raw_consumed(r));
            continue;
        }
        if (zr == Z_OK) continue;
        if (zr == Z_BUF_ERROR && !more)
            return DD_ERROR(DD_ERR_FORMAT,
                            "%s: gzip stream truncated at compressed byte offset %llu "
                            "(decompressed byte offset %llu)",
                            r->name, (unsigned long long)dd_raw_consumed(r), (unsigned long long)r->offset);
        if (zr == Z_MEM_ERROR)
            return DD_ERROR(DD_ERR_OUT_OF_MEMORY, "%s: no memory for gzip decompression", r->name);
        if (zr == Z_BUF_ERROR) continue;
        return DD_ERROR(DD_ERR_FORMAT,
                        "%s: corrupt gzip data at compressed byte offset %llu "
                        "(decompressed byte offset %llu): %s",
                        r->name, (unsigned long long)dd_raw_consumed(r), (unsigned long long)r->offset,
                        r->zs.msg ? r->zs.msg : "inflate failed");
    }
    *got = done;
    return DD_OK;
}

dd_status dd__reader_read(dd__reader *r, void *dst, size_t size, size_t *got) {
    unsigned char *out = dst;
    *got = 0;
    if (size == 0) return DD_OK;
    if (r->gz) return dd_reader_read_gz(r, out, size, got);
    if (r->file == NULL) {
        size_t left = r->mem_size - r->mem_pos;
        size_t n = size < left ? size : left;
        if (n > 0) memcpy(out, r->mem + r->mem_pos, n);
        r->mem_pos += n;
        r->offset += n;
        *got = n;
        return DD_OK;
    }
    /* Plain file: the buffered first chunk, then straight from the file. */
    size_t done = 0;
    size_t buffered = r->in_len - r->in_pos;
    if (buffered > 0) {
        size_t n = size < buffered ? size : buffered;
        memcpy(out, r->inbuf + r->in_pos, n);
        r->in_pos += n;
        done = n;
    }
    if (done < size && !r->in_eof) {
        size_t n = fread(out + done, 1, size - done, r->file);
        if (n < size - done) {
            DD_RETURN_IF(ferror(r->file), DD_ERR_IO, "%s: read error at byte offset %llu", r->name,
                         (unsigned long long)(r->offset + done + n));
            r->in_eof = 1;
        }
        done += n;
    }
    r->offset += done;
    *got = done;
    return DD_OK;
}

dd_status dd__reader_expect_end(dd__reader *r) {
    unsigned char byte;
    size_t got;
    uint64_t at = r->offset;
    DD_FORWARD(dd__reader_read(r, &byte, 1, &got));
    DD_RETURN_IF(got != 0, DD_ERR_FORMAT, "%s: unexpected trailing bytes at byte offset %llu%s", r->name,
                 (unsigned long long)at, r->gz ? " (decompressed)" : "");
    return DD_OK;
}

int64_t dd__reader_remaining_hint(const dd__reader *r) {
    if (r->size_hint < 0) return -1;
    uint64_t used = r->offset;
    return used >= (uint64_t)r->size_hint ? 0 : r->size_hint - (int64_t)used;
}

/* ---- growing buffers ------------------------------------------------------ */

dd_status dd__grow_reserve(dd__grow *g, size_t extra, int64_t hint) {
    DD_RETURN_IF(extra > SIZE_MAX - g->size, DD_ERR_OUT_OF_MEMORY, "buffer size overflow");
    size_t need = g->size + extra;
    if (need <= g->cap) return DD_OK;
    size_t target;
    if (hint >= 0 && (uint64_t)hint <= SIZE_MAX - g->size)
        target = g->size + (size_t)hint; /* what the input can still deliver */
    else if (g->cap < DD_GROW_MIN)
        target = DD_GROW_MIN;
    else
        target = g->cap > SIZE_MAX / 2 ? SIZE_MAX : g->cap * 2;
    if (target < need) target = need;
    unsigned char *p = dd__realloc(g->data, target);
    DD_RETURN_IF(p == NULL, DD_ERR_OUT_OF_MEMORY, "cannot allocate %zu bytes", target);
    g->data = p;
    g->cap = target;
    return DD_OK;
}

dd_status dd__grow_read(dd__grow *g, dd__reader *r, size_t want, size_t *got) {
    *got = 0;
    while (*got < want) {
        if (g->size == g->cap) {
            int64_t hint = dd__reader_remaining_hint(r);
            size_t left = want - *got;
            if (hint > 0) {
                /* Plain input of known size: room for all of it at once. */
                size_t step = (uint64_t)hint < left ? (size_t)hint : left;
                DD_FORWARD(dd__grow_reserve(g, step, hint));
            } else {
                /* Unknown (gzip) or used up (the input may still have grown):
                 * double, so allocation stays within twice the data read. */
                size_t step = left < DD_GROW_MIN ? left : DD_GROW_MIN;
                DD_FORWARD(dd__grow_reserve(g, step, -1));
            }
        }
        size_t room = g->cap - g->size;
        size_t left = want - *got;
        size_t n = left < room ? left : room;
        size_t read;
        DD_FORWARD(dd__reader_read(r, g->data + g->size, n, &read));
        g->size += read;
        *got += read;
        if (read < n) break;
    }
    return DD_OK;
}

void *dd__grow_take(dd__grow *g) {
    void *p = g->data;
    if (p != NULL && g->size < g->cap) {
        void *q = dd__realloc(p, g->size);
        if (q != NULL) p = q;
    }
    g->data = NULL;
    g->size = g->cap = 0;
    return p;
}

void dd__grow_free(dd__grow *g) {
    dd__free(g->data);
    g->data = NULL;
    g->size = g->cap = 0;
}
