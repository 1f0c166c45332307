/* lib/data/iterator.c -- seeded, shuffling batch iterator over a dataset.
 *
 * An epoch is one pass over a permutation of the sample indices: the
 * identity without shuffling, otherwise a Fisher-Yates shuffle driven by a
 * xoshiro256** generator seeded from (seed, epoch) alone. Batches are
 * consecutive slices of the permutation, so every sample appears exactly
 * once per epoch (the short last slice is skipped with drop_last), and
 * with num_shards S > 1 each shard keeps every S-th entry of the epoch's
 * permutation (the shards of one epoch are disjoint and cover it), and
 * dd_batch_iter_reset(it, e) reproduces epoch e whatever ran before: that
 * is what makes resuming a training run exact.
 *
 * Copying a batch out converts each sample to float [0, 1] and, when
 * augmentation is on, crops/flips it (augment.c) from a per-thread scratch
 * image. Samples are independent and their draws depend on (seed, epoch,
 * index) only, so the loop over samples is an OpenMP parallel for with the
 * iterator's own thread count (num_threads clause; the host's settings are
 * never touched) and the result is the same for every thread count.
 *
 * The iterator holds a private view of the dataset (a shared reference to
 * its samples), so the dataset handle may be destroyed before it.
 */
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "data_internal.h"

/* Domain separation from the augmentation key (augment.c). */
#define DD_SHUFFLE_DOMAIN 0x73687566666c6531ULL /* "shuffle1" */

struct dd_batch_iter {
    dd_dataset *ds; /* private view: shares the samples */
    dd_batch_iter_options opts;
    int batch;
    int nthreads;
    size_t chw;
    int32_t *perm;  /* (N) sample indices of this epoch, in order */
    int count;      /* entries of perm this shard iterates (N without sharding) */
    float *scratch; /* (nthreads, C, H, W) when augmenting, else NULL */
    int64_t epoch;
    int pos; /* next position in perm */
};

static int dd_max_threads(void) {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

static int dd_thread_num(void) {
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

void dd_batch_iter_options_init_sized(dd_batch_iter_options *opts, size_t size) {
    dd_batch_iter_options d;
    memset(&d, 0, sizeof d);
    d.shuffle = 1;
    d.seed = 1;
    d.drop_last = 0;
    d.num_threads = 0;
    d.crop_padding = 0;
    d.hflip = 0;
    d.num_shards = 1;
    d.shard = 0;
    dd__struct_fill(opts, size, &d, sizeof d);
}

static void dd_iter_permute(dd_batch_iter *it) {
    int n = it->ds->n;
    for (int i = 0; i < n; i++) it->perm[i] = i;
    if (!it->opts.shuffle) return;
    dd__rng rng;
    dd__rng_seed(&rng, dd__mix64(dd__mix64(it->opts.seed ^ DD_SHUFFLE_DOMAIN) ^ (uint64_t)it->epoch));
    for (int i = n - 1; i > 0; i--) {
        int j = (int)dd__rng_below(&rng, (uint64_t)i + 1);
        int32_t t = it->perm[i];
        it->perm[i] = it->perm[j];
        it->perm[j] = t;
    }
}

/* Keeps this shard's entries of the epoch's permutation: positions
 * shard, shard + S, shard + 2S, ... (in place: position k reads from
 * shard + k S >= k). Shards are disjoint and cover the epoch; their sizes
 * differ by at most one. */
static void dd_iter_shard(dd_batch_iter *it) {
    int n = it->ds->n, S = it->opts.num_shards, r = it->opts.shard;
    it->count = (n - r + S - 1) / S;
    for (int k = 0; k < it->count; k++) it->perm[k] = it->perm[r + k * S];
}

dd_status dd_batch_iter_create(dd_batch_iter **out, const dd_dataset *ds, int batch_size,
                               const dd_batch_iter_options *opts) {
    DD_CHECK_ARG(out != NULL);
    *out = NULL;
    DD_CHECK_ARG(ds != NULL);
    dd_batch_iter_options o;
    dd_batch_iter_options_init(&o);
    if (opts != NULL)
        DD_FORWARD(DD__STRUCT_READ(&o, opts, DD_BATCH_ITER_OPTIONS_SIZE_V1, "dd_batch_iter_create",
                                   "dd_batch_iter_options"));
    DD_RETURN_IF(batch_size < 1, DD_ERR_INVALID_ARGUMENT, "dd_batch_iter_create: batch_size %d < 1",
                 batch_size);
    DD_RETURN_IF(o.drop_last && batch_size > ds->n, DD_ERR_INVALID_ARGUMENT,
                 "dd_batch_iter_create: drop_last with batch_size %d > %d samples: every epoch "
                 "would be empty",
                 batch_size, ds->n);
    int min_hw = ds->h < ds->w ? ds->h : ds->w;
    DD_RETURN_IF(o.crop_padding < 0 || o.crop_padding > min_hw, DD_ERR_INVALID_ARGUMENT,
                 "dd_batch_iter_create: crop_padding %d outside [0, %d]", o.crop_padding, min_hw);
    DD_RETURN_IF(o.hflip != 0 && o.hflip != 1, DD_ERR_INVALID_ARGUMENT,
                 "dd_batch_iter_create: hflip %d is not 0 or 1", o.hflip);
    DD_RETURN_IF(o.shuffle != 0 && o.shuffle != 1, DD_ERR_INVALID_ARGUMENT,
                 "dd_batch_iter_create: shuffle %d is not 0 or 1", o.shuffle);
    DD_RETURN_IF(o.drop_last != 0 && o.drop_last != 1, DD_ERR_INVALID_ARGUMENT,
                 "dd_batch_iter_create: drop_last %d is not 0 or 1", o.drop_last);
    DD_RETURN_IF(o.num_threads < 0, DD_ERR_INVALID_ARGUMENT, "dd_batch_iter_create: num_threads %d < 0",
                 o.num_threads);
    DD_RETURN_IF(o.num_shards < 1 || o.num_shards > ds->n || o.shard < 0 || o.shard >= o.num_shards,
                 DD_ERR_INVALID_ARGUMENT,
                 "dd_batch_iter_create: shard %d of %d (need 1 <= num_shards <= %d samples, 0 <= shard "
                 "< num_shards)",
                 o.shard, o.num_shards, ds->n);
    DD_RETURN_IF(o.drop_last && batch_size > ds->n / o.num_shards, DD_ERR_INVALID_ARGUMENT,
                 "dd_batch_iter_create: drop_last with batch_size %d > the %d samples of the "
                 "smallest shard: its epochs would be empty",
                 batch_size, ds->n / o.num_shards);

    dd_batch_iter *it = dd__calloc(1, sizeof *it);
    DD_RETURN_IF(it == NULL, DD_ERR_OUT_OF_MEMORY, "dd_batch_iter_create: no memory");
    it->opts = o;
    it->batch = batch_size;
    it->nthreads = o.num_threads > 0 ? o.num_threads : dd_max_threads();
    it->chw = (size_t)ds->c * ds->h * ds->w;
    dd_status st = dd__dataset_view(&it->ds, ds, 0, ds->n);
    if (st != DD_OK) goto fail;
    it->perm = dd__malloc((size_t)ds->n * sizeof *it->perm);
    if (it->perm == NULL) {
        st = DD_ERROR(DD_ERR_OUT_OF_MEMORY, "dd_batch_iter_create: no memory for %d indices", ds->n);
        goto fail;
    }
    if (o.crop_padding > 0 || o.hflip) {
        it->scratch = dd__malloc((size_t)it->nthreads * it->chw * sizeof *it->scratch);
        if (it->scratch == NULL) {
            st = DD_ERROR(DD_ERR_OUT_OF_MEMORY, "dd_batch_iter_create: no memory for scratch");
            goto fail;
        }
    }
    it->epoch = 0;
    it->pos = 0;
    dd_iter_permute(it);
    dd_iter_shard(it);
    *out = it;
    return DD_OK;
fail:
    dd_batch_iter_destroy(it);
    return st;
}

void dd_batch_iter_destroy(dd_batch_iter *it) {
    if (it == NULL) return;
    dd_dataset_destroy(it->ds);
    dd__free(it->perm);
    dd__free(it->scratch);
    dd__free(it);
}

dd_status dd_batch_iter_reset(dd_batch_iter *it, int64_t epoch) {
    DD_CHECK_ARG(it != NULL);
    DD_RETURN_IF(epoch < 0, DD_ERR_INVALID_ARGUMENT, "dd_batch_iter_reset: epoch %lld < 0", (long long)epoch);
    it->epoch = epoch;
    it->pos = 0;
    dd_iter_permute(it);
    dd_iter_shard(it);
    return DD_OK;
}

dd_status dd_batch_iter_info(const dd_batch_iter *it, int *num_batches, int64_t *epoch) {
    DD_CHECK_ARG(it != NULL);
    if (num_batches != NULL) {
        int n = it->count;
        *num_batches = it->opts.drop_last ? n / it->batch : n / it->batch + (n % it->batch != 0);
    }
    if (epoch != NULL) *epoch = it->epoch;
    return DD_OK;
}

dd_status dd_batch_iter_next(dd_batch_iter *it, float *x, int32_t *labels, int32_t *indices, int *n) {
    DD_CHECK_ARG(n != NULL);
    *n = 0;
    DD_CHECK_ARG(it != NULL);
    const dd_dataset *ds = it->ds;
    int left = it->count - it->pos;
    if (left <= 0 || (it->opts.drop_last && left < it->batch)) {
        it->pos = it->count;
        return DD_OK;
    }
    int m = left < it->batch ? left : it->batch;
    const int32_t *idx = it->perm + it->pos;
    if (indices != NULL) memcpy(indices, idx, (size_t)m * sizeof *indices);
    if (labels != NULL)
        for (int i = 0; i < m; i++) labels[i] = ds->store->labels[ds->first + (size_t)idx[i]];
    if (x != NULL) {
        const size_t chw = it->chw;
        const int pad = it->opts.crop_padding, hflip = it->opts.hflip;
        const uint64_t seed = it->opts.seed, epoch = (uint64_t)it->epoch;
        float *scratch = it->scratch;
#pragma omp parallel for num_threads(it->nthreads) schedule(static)
        for (int i = 0; i < m; i++) {
            float *dst = x + (size_t)i * chw;
            if (scratch == NULL) {
                dd__dataset_sample(ds, idx[i], dst);
            } else {
                float *tmp = scratch + (size_t)dd_thread_num() * chw;
                dd__dataset_sample(ds, idx[i], tmp);
                dd__augment_draw d = dd__augment_draw_for(seed, epoch, (uint64_t)idx[i], pad, hflip);
                dd__augment_apply(tmp, dst, ds->c, ds->h, ds->w, pad, d);
            }
        }
    }
    it->pos += m;
    *n = m;
    return DD_OK;
}
