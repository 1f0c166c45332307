/* tests/fuzz/fuzz_idx.c -- libFuzzer target for the IDX reader (MNIST,
 * Fashion-MNIST; plain and gzip).
 *
 * The reader takes two files, so the input is split: its first two bytes
 * (little-endian) give the length of the images file, taken modulo one more
 * than the number of bytes that follow, and the rest is the labels file.
 * Both go to dd_dataset_open_idx_memory(), which shares every parsing path
 * with the file opener. The call must return a status without crashing, leaking or
 * reading out of bounds whatever the bytes (hostile headers included: the
 * allocation must follow the data present, not the header's claims); on
 * success the dataset is read back and checked for consistency. Seeds, in
 * this split format, live in tests/fuzz/corpus/idx.
 *
 * Build (from the source root, with the generated version.h in BUILD/include):
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -std=c11 -Iinclude \
 *     -IBUILD/include -Ilib tests/fuzz/fuzz_idx.c \
 *     $(find lib/data lib/core -name '*.c') -ldnnl -lz -lm -o fuzz_idx
 * Run:  ./fuzz_idx -max_total_time=60 CORPUS_DIR tests/fuzz/corpus/idx
 * (libFuzzer adds new inputs to the first directory; keep the seeds last.)
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include <deepdefense/data.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 2) return 0;
    size_t rest = size - 2;
    size_t split = ((size_t)data[0] | (size_t)data[1] << 8) % (rest + 1);
    const uint8_t *images = data + 2, *labels = data + 2 + split;
    dd_dataset *ds = NULL;
    if (dd_dataset_open_idx_memory(&ds, images, split, labels, rest - split) != DD_OK) {
        if (ds != NULL) abort(); /* a failed constructor must leave *out NULL */
        return 0;
    }
    int n, c, h, w, k;
    if (dd_dataset_info(ds, &n, &c, &h, &w, &k) != DD_OK || n < 1 || c != 1 || h < 1 || w < 1 || k < 1 ||
        k > 256)
        abort();
    /* Every byte of the payload came from the input (gzip aside, so the
     * image may be large only for compressed input): read one sample. */
    float *x = malloc((size_t)h * (size_t)w * sizeof *x);
    if (x == NULL) return 0;
    int32_t label;
    if (dd_dataset_get_range(ds, n - 1, 1, x, &label) != DD_OK || label < 0 || label >= k) abort();
    for (size_t j = 0; j < (size_t)h * (size_t)w; j++)
        if (!(x[j] >= 0.0f && x[j] <= 1.0f)) abort();
    free(x);
    dd_dataset_destroy(ds);
    return 0;
}
