/* lib/attacks/attack_internal.h -- what the attack files share (internal).
 *
 * Every attack kind is a const dd__attack_ops table in its own file: an
 * optional create (allocates the kind's work buffers in a->state for the
 * model's max_batch), an optional destroy, and run. attack.c owns the
 * handle: it validates options and arguments, computes the clean logits,
 * calls ops->run into the staging buffer a->out, evaluates the result and
 * copies it to the caller, so ops->run never sees bad input and never
 * writes caller memory.
 *
 * The pure pieces of the algorithms that the tests check against closed
 * forms (losses at the logits, APGD's checkpoint schedule, Square's p
 * schedule, EAD's shrinkage) are static inline here, so the library and
 * tests/check_attack.c run the very same code without exporting symbols.
 *
 * Layouts: every image buffer is (n, C, H, W) f32 NCHW with d = C*H*W
 * floats per sample; logits are (n, K) f32 row-major.
 */
#ifndef DD_LIB_ATTACK_INTERNAL_H
#define DD_LIB_ATTACK_INTERNAL_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <deepdefense/attack.h>
#include "../core/core.h"
#include "../loss/row.h"

struct dd_attack;

typedef struct dd__attack_ops {
    /* Allocates a->state for a->max_batch samples. optional */
    dd_status (*create)(struct dd_attack *a);
    /* Frees a->state. optional; dd__atk_state_free for a state whose first
     * member is its buffers' block */
    void (*destroy)(struct dd_attack *a);
    /* x: (n, d) clean images inside the box; y: (n) labels (targets in
     * targeted mode); out: (n, d) adversarial images to write. On entry
     * a->clean_logits and a->clean_pred hold the model's answer at x and
     * a->rng is freshly seeded. */
    dd_status (*run)(struct dd_attack *a, const float *x, const int32_t *y, int n, float *out);
} dd__attack_ops;

extern const dd__attack_ops dd__fgsm_ops, dd__pgd_ops, dd__apgd_ops, dd__deepfool_ops, dd__ead_ops,
    dd__cw_ops, dd__square_ops, dd__fab_ops, dd__autoattack_ops;

struct dd_attack {
    dd_attack_options o;
    const dd__attack_ops *ops;
    dd_model *m;
    int max_batch, K, C, H, W;
    size_t d;     /* C*H*W */
    int nt;       /* the model's OpenMP thread count */
    dd_norm norm; /* norm of the budget */
    int min_norm; /* 1: DeepFool, EAD, CW (eps is a success threshold) */
    dd__rng rng;
    float *out;            /* (max_batch, d) staged x_adv */
    float *grad;           /* (max_batch, d) input gradient */
    float *logits;         /* (max_batch, K) */
    float *dlogits;        /* (max_batch, K) */
    float *clean_logits;   /* (max_batch, K) logits at the clean x */
    int32_t *clean_pred;   /* (max_batch) */
    int32_t *pred;         /* (max_batch) */
    int32_t *stage;        /* (max_batch) set by AutoAttack, else derived */
    int stage_set;         /* ops->run filled stage */
    int64_t n_fwd, n_grad; /* passes of the current run */
    float *pad;            /* (max_batch, d) padded forward input */
    void *block;           /* out .. stage: one dd__alloc_views block */
    int bucket_base;       /* batch size of the top-level run (see dd__atk_forward) */
    int fw_n, fw_nb;       /* rows of the last forward: used, run (padded) */
    void *state;           /* the kind's buffers */
};

/* ---- model access (attack.c) ---------------------------------------------- */

/* DD_EVAL forward of n images; logits (n, K) written (a->logits if NULL).
 * Compacted sub-batches are padded up to one of four sizes,
 * ceil(base / 2^k), k = 0..3, base = the run's batch size, so a run uses
 * at most four batch sizes: the model keeps four plans per node, and after
 * the first run of a size nothing is created or allocated again. Hence
 * `logits` must have room for max_batch rows. */
DD_INTERNAL dd_status dd__atk_forward(struct dd_attack *a, const float *x, int n, float *logits);
/* dx = (dz/dx)^T dlogits for the last forward (its n rows). dlogits and dx
 * must have room for max_batch rows: padding rows of dlogits are zeroed
 * and those of dx written. */
DD_INTERNAL dd_status dd__atk_vjp(struct dd_attack *a, float *dlogits, float *dx);

typedef enum dd__loss {
    DD__LOSS_CE = 0,     /* CE(z, y) */
    DD__LOSS_CE_TARGET,  /* -CE(z, t): ascending it moves towards t */
    DD__LOSS_DLR,        /* DLR(z, y) */
    DD__LOSS_DLR_TARGET, /* targeted DLR(z, y, t) */
    DD__LOSS_KL          /* KL(softmax(ref) || softmax(z)) (TRADES) */
} dd__loss;

/* Forward at x (n, d), per-sample loss (n) into loss (may be NULL), and
 * grad (n, d) = d(sum_i loss_i)/dx. y: labels, t: targets (for the
 * targeted losses), ref: (n, K) reference logits (KL). logits: (n, K)
 * output, may be NULL (then a->logits). */
DD_INTERNAL dd_status dd__atk_loss_grad(struct dd_attack *a, const float *x, int n, dd__loss loss,
                                        const int32_t *y, const int32_t *t, const float *ref, float *lossv,
                                        float *grad, float *logits);

/* ---- per-sample vector helpers (attack.c; OpenMP over samples) ------------ */

/* x = clip_box(min(max(x, x0 - eps), x0 + eps)) over (n, d). */
DD_INTERNAL void dd__atk_project_linf(const struct dd_attack *a, float *x, const float *x0, int n, float eps);
/* x = clip_box(x0 + (x - x0) * min(eps, r) / (r + guard)), r = ||x - x0||_2,
 * per sample; guard 0 means factor 1 when r = 0 (torchattacks), 1e-12 is
 * the official AutoAttack form. */
DD_INTERNAL void dd__atk_project_l2(const struct dd_attack *a, float *x, const float *x0, int n, float eps,
                                    double guard);
/* x = clip_box(x) over count floats. */
DD_INTERNAL void dd__atk_clip(const struct dd_attack *a, float *x, size_t count);
/* norms[0..3] = L0, L1, L2, Linf of (u - v) over d floats. */
DD_INTERNAL void dd__atk_norms(const float *u, const float *v, size_t d, double norms[4]);
/* One norm of (u - v) over d floats. */
DD_INTERNAL double dd__atk_norm(const float *u, const float *v, size_t d, dd_norm p);
/* dst[j] = src[idx[j]] for j < m, rows of `row` floats. */
DD_INTERNAL void dd__atk_gather(float *dst, const float *src, const int32_t *idx, int m, size_t row);
/* dst[idx[j]] = src[j]. */
DD_INTERNAL void dd__atk_scatter(float *dst, const float *src, const int32_t *idx, int m, size_t row);
/* Argmax of every row of logits (n, K) into pred (n). */
DD_INTERNAL void dd__atk_argmax_rows(const float *logits, int n, int K, int32_t *pred);
/* Fills v (count) with U(lo, hi) / N(0, 1) draws from a->rng, in order. */
DD_INTERNAL void dd__atk_uniform(struct dd_attack *a, float *v, size_t count, float lo, float hi);
DD_INTERNAL void dd__atk_normal(struct dd_attack *a, float *v, size_t count);

/* Runs the attack `a` (already validated) on n images without the final
 * evaluation: reseed, clean logits (if clean != 0; every kind but FGSM and
 * PGD needs them), ops->run into out. For AutoAttack's stages. */
DD_INTERNAL dd_status dd__attack_run_raw(struct dd_attack *a, const float *x, const int32_t *y, int n,
                                         float *out, int clean);
/* Creates a sub-attack on the same model without public validation of the
 * caller (used by AutoAttack). */
DD_INTERNAL dd_status dd__attack_create_sub(struct dd_attack **out, dd_model *m, const dd_attack_options *o);

/* ======================================================================== */
/* Pure pieces, shared with the tests                                        */
/* ======================================================================== */

/* sign(v) with sign(0) = sign(NaN) = 0 (PyTorch's sign of 0), written
 * as two flat selects, not nested ones, so that per-pixel loops vectorise
 * (the nested form compiled to branches that random signs mispredict). */
static inline float dd__signf(float v) {
    float s = v > 0.0f ? 1.0f : 0.0f;
    return v < 0.0f ? -1.0f : s;
}

/* min(max(v, lo), hi) as fminf(fmaxf(v, lo), hi) computes it (a NaN v gives
 * lo), written as selects that compile to maxps/minps instead of two libm
 * calls per pixel. */
static inline float dd__clampf(float v, float lo, float hi) {
    float t = v > lo ? v : lo;
    return t < hi ? t : hi;
}

/* APGD checkpoints (official schedule): k0 = max(floor(0.22 N), 1),
 * decrement max(floor(0.03 N), 1), minimum max(floor(0.06 N), 1); the
 * step-size check runs when a counter reaches k, i.e. at 0-based iterations
 * k0-1, k0-1+k1, ... Writes up to cap iteration indices into it (may be
 * NULL) and returns how many there are in [0, N). */
static inline int dd__apgd_checkpoints(int N, int *it, int cap) {
    int k = (int)floor(0.22 * N), dec = (int)floor(0.03 * N), kmin = (int)floor(0.06 * N);
    if (k < 1) k = 1;
    if (dec < 1) dec = 1;
    if (kmin < 1) kmin = 1;
    int count = 0, i = k - 1;
    while (i < N) {
        if (it && count < cap) it[count] = i;
        count++;
        k = k - dec > kmin ? k - dec : kmin;
        i += k;
    }
    return count;
}

/* APGD's step-size decision for one sample at the checkpoint of 0-based
 * iteration i with window k: condition 1, at most rho*k loss increases over
 * the last k steps (`<=`, as the code); condition 2, not reduced at the
 * previous checkpoint and no best-loss progress since. ring holds the loss
 * history, slot j % ring_len, row stride `stride`, column `sample`;
 * iteration -1 reads a slot never written (zero), the official code's
 * loss_steps[-1]. Returns 1 to halve the step. */
static inline int dd__apgd_reduce(const float *ring, int ring_len, int stride, int sample, int i, int k,
                                  double rho, int reduced_last, float lbest_last, float lbest) {
    int count = 0;
    for (int c = 0; c < k; c++) {
        int j1 = i - c, j0 = i - c - 1;
        int s1 = ((j1 % ring_len) + ring_len) % ring_len, s0 = ((j0 % ring_len) + ring_len) % ring_len;
        count += ring[(size_t)s1 * stride + sample] > ring[(size_t)s0 * stride + sample];
    }
    int cond1 = (double)count <= (double)k * rho;
    int cond2 = !reduced_last && lbest_last >= lbest;
    return cond1 || cond2;
}

/* Square's p schedule (square.py p_selection): iteration `it` (0-based) of
 * n_queries, optionally rescaled to a 10000-query budget. */
static inline double dd__square_p(int it, int n_queries, double p_init, int rescale) {
    if (rescale) it = (int)((double)it / (double)n_queries * 10000.0);
    if (it <= 10) return p_init;
    if (it <= 50) return p_init / 2;
    if (it <= 200) return p_init / 4;
    if (it <= 500) return p_init / 8;
    if (it <= 1000) return p_init / 16;
    if (it <= 2000) return p_init / 32;
    if (it <= 4000) return p_init / 64;
    if (it <= 6000) return p_init / 128;
    if (it <= 8000) return p_init / 256;
    return p_init / 512;
}

/* Square's window side for fraction p of an (C, H, W) image: Linf
 * max(round(sqrt(p H W)), 1); L2 at least 3 and odd; both capped at
 * min(H, W) (the official code's later versions). */
static inline int dd__square_side(double p, int H, int W, int l2) {
    int s = (int)lround(sqrt(p * (double)H * (double)W));
    if (s < (l2 ? 3 : 1)) s = l2 ? 3 : 1;
    if (l2 && s % 2 == 0) s++;
    int cap = H < W ? H : W;
    return s < cap ? s : cap;
}

/* EAD's projected shrinkage-thresholding S_beta of z around x0 into the box. */
static inline float dd__ead_shrink(float z, float x0, float beta, float lo, float hi) {
    float diff = z - x0;
    if (diff > beta) {
        float v = z - beta;
        return v < hi ? v : hi;
    }
    if (diff < -beta) {
        float v = z + beta;
        return v > lo ? v : lo;
    }
    return x0;
}

/* EAD0's per-sample update of the constant c after a binary-search step:
 * success lowers the upper bound, failure raises the lower one; bisect once
 * an upper bound (< 1e9) is known, else multiply by 10. */
static inline void dd__ead_update_const(int success, double *c, double *lower, double *upper) {
    if (success) {
        *upper = fmin(*upper, *c);
        if (*upper < 1e9) *c = (*lower + *upper) / 2.0;
    } else {
        *lower = fmax(*lower, *c);
        *c = *upper < 1e9 ? (*lower + *upper) / 2.0 : *c * 10.0;
    }
}

/* Frees a->state, a struct whose first member is `void *block`, the
 * dd__alloc_views block of its buffers, and the block; a->state = NULL.
 * NULL state: no-op. */
DD_INTERNAL void dd__atk_state_free(struct dd_attack *a);

#endif
