/* lib/core/rng.c -- the library's pseudo-random numbers.
 *
 * xoshiro256** (Blackman and Vigna, 2018): 256 bits of state, period
 * 2^256 - 1, passes BigCrush, a few cycles per number. Seeding expands one
 * 64-bit seed through splitmix64, as the authors recommend, so that nearby
 * seeds give unrelated streams and the state is never all zero. The state
 * lives in the handle that owns it (dd__rng), never in a global, so runs are
 * reproducible: same seed and same call sequence, same numbers.
 *   uniform: the top 53 bits scaled by 2^-53, exactly representable, [0, 1).
 *   normal:  Box-Muller, one cosine branch per call (no cached second value,
 *            so the stream position depends only on the number of calls).
 *   below:   rejection of the lowest (2^64 mod n) values, unbiased.
 */
#include <math.h>

#include "core.h"

/* 2*pi to double precision (M_PI is not in C11). */
#define DD_TWO_PI 6.283185307179586476925286766559

static uint64_t dd_rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static uint64_t dd_splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

void dd__rng_seed(dd__rng *r, uint64_t seed) {
    uint64_t x = seed;
    for (int i = 0; i < 4; i++) r->s[i] = dd_splitmix64(&x);
}

uint64_t dd__rng_next(dd__rng *r) {
    uint64_t *s = r->s;
    uint64_t result = dd_rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = dd_rotl(s[3], 45);
    return result;
}

double dd__rng_uniform(dd__rng *r) { return (double)(dd__rng_next(r) >> 11) * 0x1.0p-53; }

double dd__rng_normal(dd__rng *r) {
    /* u1 in (0, 1] so log(u1) is finite. */
    double u1 = 1.0 - dd__rng_uniform(r);
    double u2 = dd__rng_uniform(r);
    return sqrt(-2.0 * log(u1)) * cos(DD_TWO_PI * u2);
}

uint64_t dd__rng_below(dd__rng *r, uint64_t n) {
    if (n <= 1) return 0;
    /* 2^64 mod n: values below it would make small results more likely. */
    uint64_t threshold = (0 - n) % n;
    for (;;) {
        uint64_t x = dd__rng_next(r);
        if (x >= threshold) return x % n;
    }
}
