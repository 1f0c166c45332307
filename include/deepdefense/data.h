/* deepdefense/data.h -- datasets: CIFAR-10 and IDX readers, batches, augmentation.
 *
 * A dd_dataset holds N labelled images of one shape (C, H, W). Images leave
 * the library as float32, NCHW, in [0, 1] pixel space (an 8-bit value v
 * becomes v / 255.0f, correctly rounded); labels are int32 in [0, K), K the
 * dataset's number of classes. File formats:
 *
 *   CIFAR-10 binary ("cifar-10-batches-bin"): records of 1 label byte (0-9)
 *     followed by 3072 pixel bytes (1024 red, 1024 green, 1024 blue, each a
 *     32x32 row-major plane); data_batch_1.bin .. data_batch_5.bin (train),
 *     test_batch.bin (test). K = 10, C = 3, H = W = 32.
 *   IDX (MNIST, Fashion-MNIST): an images file (magic 00 00 08 03, then N,
 *     rows, cols as big-endian uint32, then N*rows*cols bytes) and a labels
 *     file (magic 00 00 08 01, then N, then N bytes). C = 1, K = 1 + the
 *     largest label.
 *
 * Every reader accepts plain or gzip-compressed bytes, recognised by the
 * gzip magic (1f 8b), never by the file name. Files are checked strictly:
 * a missing or unreadable file gives DD_ERR_IO naming it; a truncated,
 * malformed or inconsistent one (bad magic, wrong dimensions, image and
 * label counts that disagree, a CIFAR label above 9, a CIFAR size that is
 * not a multiple of 3073 bytes, trailing bytes, a corrupt gzip stream)
 * gives DD_ERR_FORMAT, and dd_last_error() names the file and the byte
 * offset (in the decompressed stream for gzip input). Allocation grows with
 * the bytes actually read, so a hostile header cannot make the library
 * allocate more than about twice the data it contains.
 *
 * Limits (DD_ERR_FORMAT from files, DD_ERR_INVALID_ARGUMENT from the host):
 * 1 <= N <= DD_DATASET_MAX_SAMPLES and 1 <= C*H*W <= DD_DATASET_MAX_IMAGE
 * elements.
 *
 * Memory and ownership: a dataset's samples are immutable after creation
 * and reference-counted internally, so subsets and iterators share them
 * without copying, and any handle may be destroyed in any order. Byte
 * arrays, paths and host arrays given to these functions are borrowed for
 * the call (copied where kept). The library never returns memory that the
 * caller must free().
 *
 * Threads: different handles may be used concurrently from different
 * threads, even when they share samples; one handle must be used by one
 * thread at a time. The iterator parallelises over samples with OpenMP
 * using its own thread count (num_threads() clause); it never changes the
 * host's OpenMP settings.
 */
#ifndef DEEPDEFENSE_DATA_H
#define DEEPDEFENSE_DATA_H

#include "status.h"

#ifdef __cplusplus
extern "C" {
#endif

/** Opaque dataset handle. */
typedef struct dd_dataset dd_dataset;

/** Opaque batch iterator handle. */
typedef struct dd_batch_iter dd_batch_iter;

/** Largest number of samples in one dataset (2^31 - 1). */
#define DD_DATASET_MAX_SAMPLES 2147483647
/** Largest number of elements C*H*W of one image (2^24). */
#define DD_DATASET_MAX_IMAGE (1 << 24)

/** Which part of a dataset directory to open. */
typedef enum dd_split {
    DD_SPLIT_TRAIN = 0, /**< CIFAR-10 data_batch_1..5.bin, IDX train-*-idx?-ubyte */
    DD_SPLIT_TEST = 1   /**< CIFAR-10 test_batch.bin, IDX t10k-*-idx?-ubyte */
} dd_split;

/* ---- opening -------------------------------------------------------------- */

/** CONSTRUCTOR of dd_dataset: the CIFAR-10 split `split` of the directory
 *  dir (borrowed), which holds the official binary files: the five
 *  data_batch_<i>.bin concatenated in order for DD_SPLIT_TRAIN, or
 *  test_batch.bin for DD_SPLIT_TEST. Each file may be gzip-compressed
 *  (same name). Shape (N, 3, 32, 32), K = 10.
 *  On failure *out is NULL. Returns DD_OK, DD_ERR_INVALID_ARGUMENT (out or
 *  dir NULL, unknown split), DD_ERR_IO (a file is missing or unreadable;
 *  the message names it), DD_ERR_FORMAT (see the file comment),
 *  DD_ERR_OUT_OF_MEMORY. Thread-safe. */
DD_API dd_status dd_dataset_open_cifar10(dd_dataset **out, const char *dir, dd_split split);

/** CONSTRUCTOR of dd_dataset: one CIFAR-10 binary file at path (borrowed),
 *  plain or gzip. Statuses as dd_dataset_open_cifar10(). Thread-safe. */
DD_API dd_status dd_dataset_open_cifar10_file(dd_dataset **out, const char *path);

/** CONSTRUCTOR of dd_dataset: CIFAR-10 records from memory: data (borrowed
 *  for the call, copied) holds size bytes, plain or gzip; size == 0 is an
 *  empty file (DD_ERR_FORMAT). Error messages call it "<memory>".
 *  Returns DD_OK, DD_ERR_INVALID_ARGUMENT (out NULL, data NULL with
 *  size > 0), DD_ERR_FORMAT, DD_ERR_OUT_OF_MEMORY. Thread-safe. */
DD_API dd_status dd_dataset_open_cifar10_memory(dd_dataset **out, const void *data, size_t size);

/** CONSTRUCTOR of dd_dataset: an IDX images file and its labels file
 *  (paths borrowed), each plain or gzip. Shape (N, 1, rows, cols),
 *  K = 1 + the largest label. Only unsigned-byte IDX data is read (type
 *  code 0x08); the other IDX element types give DD_ERR_UNSUPPORTED.
 *  On failure *out is NULL. Returns DD_OK, DD_ERR_INVALID_ARGUMENT,
 *  DD_ERR_IO (missing or unreadable file, named), DD_ERR_FORMAT (bad magic,
 *  images not 3-D or labels not 1-D, a zero dimension, sizes over the
 *  limits, truncated data, trailing bytes, counts that differ between the
 *  two files, gzip errors; the message names the file and byte offset),
 *  DD_ERR_UNSUPPORTED, DD_ERR_OUT_OF_MEMORY. Thread-safe. */
DD_API dd_status dd_dataset_open_idx(dd_dataset **out, const char *images_path, const char *labels_path);

/** CONSTRUCTOR of dd_dataset: IDX images and labels from memory (borrowed
 *  for the call, copied), each plain or gzip. Error messages call them
 *  "<images>" and "<labels>". Returns DD_OK, DD_ERR_INVALID_ARGUMENT
 *  (NULL, sizes 0), DD_ERR_FORMAT (truncated, malformed or inconsistent
 *  files), DD_ERR_UNSUPPORTED (an IDX element type other than unsigned
 *  byte), DD_ERR_OUT_OF_MEMORY. Thread-safe. */
DD_API dd_status dd_dataset_open_idx_memory(dd_dataset **out, const void *images, size_t images_size,
                                            const void *labels, size_t labels_size);

/** CONSTRUCTOR of dd_dataset: opens the split of whatever dataset the
 *  directory dir (borrowed) holds, looking in this order for
 *    - CIFAR-10: data_batch_1.bin (train) or test_batch.bin (test) in dir
 *      or in dir/cifar-10-batches-bin;
 *    - IDX: <p>-images-idx3-ubyte and <p>-labels-idx1-ubyte, each with an
 *      optional ".gz" suffix and "." instead of "-" before "idx" accepted,
 *      where <p> is "train" or "t10k" (the MNIST and Fashion-MNIST names,
 *      as installed by Debian's dataset-fashion-mnist in
 *      /usr/share/datasets/fashion-mnist).
 *  Returns the statuses of dd_dataset_open_cifar10 and dd_dataset_open_idx
 *  (the chosen opener's), or DD_ERR_IO when dir holds neither (the message lists what was looked for, and says so when only
 *  xz-compressed CIFAR-10 files were found: decompress them with xz -dk).
 *  Thread-safe. */
DD_API dd_status dd_dataset_open_auto(dd_dataset **out, const char *dir, dd_split split);

/** CONSTRUCTOR of dd_dataset: n images x, (n, c, h, w) f32 NCHW, every
 *  value finite and in [0, 1], and labels (n) int32 in [0, num_classes),
 *  both borrowed for the call and copied (stored as float, returned
 *  bit-exactly). On failure *out is NULL. Returns DD_OK,
 *  DD_ERR_INVALID_ARGUMENT (NULL pointers, sizes < 1 or over the limits, a
 *  label or pixel out of range; nothing allocated), DD_ERR_NUMERIC (a pixel
 *  is NaN or infinite), DD_ERR_OUT_OF_MEMORY. Thread-safe. */
DD_API dd_status dd_dataset_from_memory(dd_dataset **out, const float *x, const int32_t *labels, int n, int c,
                                        int h, int w, int num_classes);

/** CONSTRUCTOR of dd_dataset: as dd_dataset_from_memory() from 8-bit
 *  pixels x, (n, c, h, w) uint8 NCHW, value v meaning v / 255 (stored as
 *  bytes: a quarter of the memory). Returns DD_OK,
 *  DD_ERR_INVALID_ARGUMENT, DD_ERR_OUT_OF_MEMORY. Thread-safe. */
DD_API dd_status dd_dataset_from_memory_u8(dd_dataset **out, const uint8_t *x, const int32_t *labels, int n,
                                           int c, int h, int w, int num_classes);

/** CONSTRUCTOR of dd_dataset: the samples [start, start + count) of ds
 *  (borrowed for the call), sharing its memory (nothing is copied; ds may
 *  be destroyed first). Same shape and K as ds; sample i of the subset is
 *  sample start + i of ds. On failure *out is NULL. Returns DD_OK,
 *  DD_ERR_INVALID_ARGUMENT (NULL, count < 1, range outside [0, N)),
 *  DD_ERR_OUT_OF_MEMORY. */
DD_API dd_status dd_dataset_subset(dd_dataset **out, const dd_dataset *ds, int start, int count);

/** DESTRUCTOR of dd_dataset. NULL is a no-op. Subsets and iterators made
 *  from it stay valid. */
DD_API void dd_dataset_destroy(dd_dataset *ds);

/* ---- reading ---------------------------------------------------------------- */

/** METHOD of dd_dataset: its number of samples n, image shape (c, h, w)
 *  and number of classes k. Each output pointer may be NULL. Returns
 *  DD_OK, DD_ERR_INVALID_ARGUMENT (ds NULL). */
DD_API dd_status dd_dataset_info(const dd_dataset *ds, int *n, int *c, int *h, int *w, int *k);

/** METHOD of dd_dataset: copies the count samples whose indices are
 *  indices[0..count) (borrowed, int32 in [0, N), repeats allowed) into
 *  x_out, (count, C, H, W) f32 NCHW in [0, 1], and labels_out, (count)
 *  int32. Either output may be NULL (not written); x_out must have room
 *  for count*C*H*W floats. Everything is checked before anything is
 *  written. Returns DD_OK, DD_ERR_INVALID_ARGUMENT (ds or indices NULL,
 *  count < 0, an index out of range). */
DD_API dd_status dd_dataset_get(const dd_dataset *ds, const int32_t *indices, int count, float *x_out,
                                int32_t *labels_out);

/** METHOD of dd_dataset: as dd_dataset_get() for the samples
 *  [start, start + count). Returns DD_OK, DD_ERR_INVALID_ARGUMENT (NULL,
 *  the range outside [0, n)). Thread-safe. */
DD_API dd_status dd_dataset_get_range(const dd_dataset *ds, int start, int count, float *x_out,
                                      int32_t *labels_out);

/* ---- batches and augmentation ------------------------------------------------ */

/** Batch iterator options. Fill with dd_batch_iter_options_init(), then
 *  change fields.
 *
 *  Shuffling draws a permutation of the samples from (seed, epoch), so
 *  every epoch visits every sample exactly once in an order that depends
 *  only on the seed and the epoch number: a run resumed at epoch e with
 *  dd_batch_iter_reset(it, e) sees the same batches as an uninterrupted
 *  one. Augmentation, applied to each sample as it is copied out, draws its
 *  choices from (seed, epoch, sample index), so results do not depend on
 *  the thread count or on the batch a sample falls in:
 *    - random crop (crop_padding = p > 0): the image is padded by p zero
 *      pixels on each side and an H x W window is cut at an offset drawn
 *      uniformly from [0, 2p] in each direction (torchvision RandomCrop
 *      with padding p: the image shifted by up to p pixels, zero-filled);
 *    - horizontal flip (hflip = 1): with probability 1/2 the (cropped)
 *      image is mirrored left-right, out[., y, x] = in[., y, W-1-x]. */
typedef struct dd_batch_iter_options {
    size_t struct_size; /**< set by dd_batch_iter_options_init() */
    int shuffle;        /**< 1 (default): new permutation every epoch; 0: index order */
    uint64_t seed;      /**< seed of shuffling and augmentation (default 1) */
    int drop_last;      /**< 1: skip a final batch smaller than batch_size (default 0) */
    int num_threads;    /**< OpenMP threads over samples; 0 (default): omp_get_max_threads() */
    int crop_padding;   /**< random-crop padding p in pixels, 0 (default) = no crop; CIFAR uses 4 */
    int hflip;          /**< 1: random horizontal flip; 0 (default) = none */
    int num_shards;     /**< S >= 1 (default 1): split every epoch into S disjoint shards */
    int shard;          /**< this iterator's shard in [0, S) (default 0): it yields the
                             epoch permutation's entries shard, shard + S, shard + 2S, ...
                             (about N / S samples; shard sizes differ by at most one).
                             Iterators with the same seed and S, one per shard, see every
                             sample exactly once per epoch between them (data-parallel
                             training: deepdefense/mpi.h). Augmentation draws depend on
                             (seed, epoch, sample) only, so a sample is augmented alike
                             in whichever shard it falls. */
} dd_batch_iter_options;
/** The first released layout ends at hflip (the shard fields appended; see status.h). */
#define DD_BATCH_ITER_OPTIONS_SIZE_V1 DD_SIZE_THROUGH(dd_batch_iter_options, hflip)

/** dd_batch_iter_options_init() for the first `size` bytes of *opts, which
 *  get struct_size = size (for bindings without the inline function; see
 *  status.h). NULL or size < sizeof(size_t) is a no-op. Thread-safe. */
DD_API void dd_batch_iter_options_init_sized(dd_batch_iter_options *opts, size_t size);
/** Fills *opts with the defaults listed above (num_threads 0 is resolved
 *  by dd_batch_iter_create(), on the calling thread). NULL is a no-op.
 *  Thread-safe. */
static inline void dd_batch_iter_options_init(dd_batch_iter_options *opts) {
    dd_batch_iter_options_init_sized(opts, sizeof *opts);
}

/** CONSTRUCTOR of dd_batch_iter: batches of up to batch_size samples of ds
 *  (borrowed for the call; the iterator shares its samples, so ds may be
 *  destroyed first). opts is copied; NULL means the defaults (shuffled,
 *  seed 1, no augmentation). The iterator starts at the beginning of epoch
 *  0. On failure *out is NULL. Returns DD_OK, DD_ERR_INVALID_ARGUMENT (NULL
 *  out or ds, batch_size < 1, drop_last with batch_size > N so that an
 *  epoch would be empty, crop_padding < 0 or > min(H, W), shuffle,
 *  drop_last or hflip not 0/1, num_threads < 0, num_shards outside [1, N],
 *  shard outside [0, num_shards), drop_last with batch_size > N / num_shards,
 *  struct_size not set by dd_batch_iter_options_init()), DD_ERR_OUT_OF_MEMORY.
 *  Thread-safe. */
DD_API dd_status dd_batch_iter_create(dd_batch_iter **out, const dd_dataset *ds, int batch_size,
                                      const dd_batch_iter_options *opts);

/** DESTRUCTOR of dd_batch_iter. NULL is a no-op. */
DD_API void dd_batch_iter_destroy(dd_batch_iter *it);

/** METHOD of dd_batch_iter: the next batch of the current epoch. Writes
 *  *n, the number of samples in the batch: batch_size, fewer for the last
 *  batch of an epoch (unless drop_last), or 0 once the epoch is over (and
 *  on every later call until dd_batch_iter_reset()). For the *n samples it
 *  writes x, (n, C, H, W) f32 NCHW in [0, 1], augmented as configured;
 *  labels, (n) int32; and indices, (n) int32, the samples' indices in ds.
 *  Each of x, labels and indices may be NULL (not written); those given
 *  must have room for batch_size samples. Returns DD_OK,
 *  DD_ERR_INVALID_ARGUMENT (it or n NULL). */
DD_API dd_status dd_batch_iter_next(dd_batch_iter *it, float *x, int32_t *labels, int32_t *indices, int *n);

/** METHOD of dd_batch_iter: starts epoch `epoch` (>= 0) from its first
 *  batch, with that epoch's permutation and augmentation draws. Calling it
 *  with e and iterating gives the same batches whatever came before, which
 *  is how a resumed run reproduces an uninterrupted one. Returns DD_OK,
 *  DD_ERR_INVALID_ARGUMENT (it NULL, epoch < 0). */
DD_API dd_status dd_batch_iter_reset(dd_batch_iter *it, int64_t epoch);

/** METHOD of dd_batch_iter: number of batches per epoch (ceil(N /
 *  batch_size), or floor with drop_last) and the current epoch; either
 *  output may be NULL. Returns DD_OK, DD_ERR_INVALID_ARGUMENT (it NULL). */
DD_API dd_status dd_batch_iter_info(const dd_batch_iter *it, int *num_batches, int64_t *epoch);

#ifdef __cplusplus
}
#endif
#endif
