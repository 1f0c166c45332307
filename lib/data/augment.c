/* lib/data/augment.c -- the standard CIFAR augmentation: random crop with
 * zero padding and random horizontal flip.
 *
 * The draws of a sample are a pure function of (seed, epoch, sample index):
 * the three are chained through the splitmix64 finaliser into one 64-bit
 * key that seeds a private xoshiro256** generator (dd__rng), from which the
 * crop offsets (unbiased, dd__rng_below) and the flip bit are taken. No
 * generator state is shared between samples, so the iterator may process
 * samples on any number of threads in any order and get identical batches,
 * and a resumed run redraws exactly what the uninterrupted one drew.
 *
 * Applying a draw is one pass over the output: with padding p and offsets
 * (dy, dx) in [0, 2p], the crop is out[y][x] = in[y + dy - p][x + dx - p]
 * (zero outside the image: torchvision's RandomCrop(size, padding=p) with
 * zero fill), and the flip, applied after the crop as torchvision's
 * transform order does, reads column W-1-x of the crop instead of x.
 */
#include <string.h>

#include "data_internal.h"

/* Domain separation from the shuffle key (iterator.c), so that the crop
 * draws and the permutation of an epoch are unrelated streams. */
#define DD_AUGMENT_DOMAIN 0x6175676d656e7431ULL /* "augment1" */

dd__augment_draw dd__augment_draw_for(uint64_t seed, uint64_t epoch, uint64_t index, int pad, int hflip) {
    uint64_t key = dd__mix64(seed ^ DD_AUGMENT_DOMAIN);
    key = dd__mix64(key ^ epoch);
    key = dd__mix64(key ^ index);
    dd__rng rng;
    dd__rng_seed(&rng, key);
    dd__augment_draw d;
    d.dy = pad;
    d.dx = pad;
    d.flip = 0;
    if (pad > 0) {
        d.dy = (int)dd__rng_below(&rng, (uint64_t)(2 * pad + 1));
        d.dx = (int)dd__rng_below(&rng, (uint64_t)(2 * pad + 1));
    }
    if (hflip) d.flip = (int)(dd__rng_next(&rng) >> 63);
    return d;
}

void dd__augment_apply(const float *src, float *dst, int c, int h, int w, int pad, dd__augment_draw d) {
    int oy = d.dy - pad, ox = d.dx - pad; /* source = destination + offset */
    for (int ch = 0; ch < c; ch++) {
        const float *plane = src + (size_t)ch * h * w;
        for (int y = 0; y < h; y++) {
            float *row = dst + ((size_t)ch * h + y) * w;
            int sy = y + oy;
            if (sy < 0 || sy >= h) {
                memset(row, 0, (size_t)w * sizeof *row);
                continue;
            }
            const float *srow = plane + (size_t)sy * w;
            for (int x = 0; x < w; x++) {
                int cx = d.flip ? w - 1 - x : x;
                int sx = cx + ox;
                row[x] = sx >= 0 && sx < w ? srow[sx] : 0.0f;
            }
        }
    }
}
