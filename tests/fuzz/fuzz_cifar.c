/* tests/fuzz/fuzz_cifar.c -- libFuzzer target for the CIFAR-10 reader.
 *
 * The input is one CIFAR-10 binary file (plain or gzip) handed to
 * dd_dataset_open_cifar10_memory(), which shares every parsing path with the
 * file opener (the same dd__reader and record loop). Whatever the bytes, the
 * call must return a status without crashing, leaking or reading out of
 * bounds; when it succeeds the dataset is exercised (info, a range read, one
 * augmented batch) so that the handle it built is checked as well. Seeds
 * live in tests/fuzz/corpus/cifar.
 *
 * Build (from the source root, with the generated version.h in BUILD/include):
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -std=c11 -Iinclude \
 *     -IBUILD/include -Ilib tests/fuzz/fuzz_cifar.c \
 *     $(find lib/data lib/core -name '*.c') -ldnnl -lz -lm -o fuzz_cifar
 * Run:  ./fuzz_cifar -max_total_time=60 CORPUS_DIR tests/fuzz/corpus/cifar
 * (libFuzzer adds new inputs to the first directory; keep the seeds last.)
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include <deepdefense/data.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    dd_dataset *ds = NULL;
    if (dd_dataset_open_cifar10_memory(&ds, data, size) != DD_OK) {
        if (ds != NULL) abort(); /* a failed constructor must leave *out NULL */
        return 0;
    }
    int n, c, h, w, k;
    if (dd_dataset_info(ds, &n, &c, &h, &w, &k) != DD_OK || n < 1 || c != 3 || h != 32 || w != 32 || k != 10)
        abort();
    static float x[4 * 3 * 32 * 32];
    int32_t labels[4];
    int count = n < 4 ? n : 4;
    if (dd_dataset_get_range(ds, n - count, count, x, labels) != DD_OK) abort();
    for (int i = 0; i < count; i++)
        if (labels[i] < 0 || labels[i] > 9) abort();
    dd_batch_iter_options o;
    dd_batch_iter_options_init(&o);
    o.crop_padding = 4;
    o.hflip = 1;
    o.num_threads = 1;
    dd_batch_iter *it = NULL;
    if (dd_batch_iter_create(&it, ds, 4, &o) != DD_OK) abort();
    int got;
    if (dd_batch_iter_next(it, x, labels, NULL, &got) != DD_OK || got != count) abort();
    dd_batch_iter_destroy(it);
    dd_dataset_destroy(ds);
    return 0;
}
