/* tests/fuzz/fuzz_safetensors.c -- libFuzzer target for the checkpoint loader.
 *
 * The input is one whole safetensors file. The library reads checkpoints
 * only from paths (dd_model_load), so the bytes are put in an anonymous
 * in-memory file (memfd_create, no disk traffic) that is opened again
 * through /proc/self/fd/N: the loader then runs its real path, fstat and
 * pread included. Whatever the bytes, the load must return a status without
 * crashing, leaking or reading out of bounds, and leave *out NULL on
 * failure. When it succeeds the model is exercised: every parameter is read
 * back (must be finite: the loader refuses NaN/Inf), one forward pass runs,
 * and save + load must reproduce the parameters bit for bit.
 *
 * The model is loaded with one thread and max_batch 1 (dd_model_load_ex), so
 * that one input costs a few milliseconds and the activations of a hostile
 * architecture stay within one sample. A header may still describe an
 * architecture whose single-sample activations need gigabytes (the library
 * refuses only above 64 GB); run the target with
 * ASAN_OPTIONS=allocator_may_return_null=1:max_allocation_size_mb=1024 so that
 * such a request fails inside the allocator and must come back as
 * DD_ERR_OUT_OF_MEMORY, which is a tested path too. Seeds, small checkpoints
 * of every node type with and without GFA hooks, live in
 * tests/fuzz/corpus/safetensors (written by tests/fuzz/make_seeds.c).
 *
 * Build: cmake -DCMAKE_C_COMPILER=clang -DDD_BUILD_FUZZ=ON (tests/fuzz/CMakeLists.txt).
 * Run:   ./fuzz_safetensors -max_total_time=60 CORPUS_DIR tests/fuzz/corpus/safetensors
 */
#include "fuzz_checkpoint.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fuzz_st_load(data, size);
    return 0;
}
