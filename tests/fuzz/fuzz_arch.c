/* tests/fuzz/fuzz_arch.c -- libFuzzer target for the architecture JSON of
 * a checkpoint, on its own.
 *
 * The input is the architecture text alone (what dd_model_save writes into
 * the "deepdefense.arch" metadata entry). The target wraps it into a
 * minimal safetensors file -- an 8-byte header length, the header
 * {"__metadata__":{"format":"pt","deepdefense.arch":"<input, JSON-escaped>"}}
 * and no tensors -- so every mutation reaches the architecture parser and
 * the model builder instead of being spent on the file's framing (which
 * fuzz_safetensors covers). Whatever the text, dd_model_load_ex must return
 * a status without crashing, leaking or reading out of bounds: DD_ERR_FORMAT
 * (malformed text, a graph the engine refuses, or a valid architecture
 * whose tensors the file lacks), DD_ERR_OUT_OF_MEMORY or DD_ERR_BACKEND.
 * An architecture without parameters loads, and is then exercised as in
 * fuzz_safetensors. Seeds: tests/fuzz/corpus/arch, the architectures of the
 * safetensors seeds (tests/fuzz/make_seeds.c writes both).
 *
 * Run: ./fuzz_arch -max_total_time=60 CORPUS_DIR tests/fuzz/corpus/arch
 */
#include "fuzz_checkpoint.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static const char head[] = "{\"__metadata__\":{\"format\":\"pt\",\"deepdefense.arch\":\"";
    static const char tail[] = "\"}}";
    if (size > (1u << 20)) return 0;
    /* 8 bytes of length, the header (an input byte escapes to at most 6) */
    size_t cap = 8 + sizeof head + 6 * size + sizeof tail;
    unsigned char *file = malloc(cap);
    if (file == NULL) return 0;
    size_t n = 8;
    memcpy(file + n, head, sizeof head - 1);
    n += sizeof head - 1;
    for (size_t i = 0; i < size; i++) {
        unsigned char c = data[i];
        if (c == '"' || c == '\\') {
            file[n++] = '\\';
            file[n++] = c;
        } else if (c < 0x20) {
            n += (size_t)snprintf((char *)file + n, 7, "\\u%04x", c);
        } else {
            file[n++] = c; /* bytes >= 0x80 as they are: invalid UTF-8 is refused */
        }
    }
    memcpy(file + n, tail, sizeof tail - 1);
    n += sizeof tail - 1;
    uint64_t header = n - 8;
    for (int i = 0; i < 8; i++) file[i] = (unsigned char)(header >> (8 * i));

    fuzz_st_load(file, n);
    free(file);
    return 0;
}
