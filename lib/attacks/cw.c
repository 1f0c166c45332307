/* lib/attacks/cw.c -- Carlini-Wagner L2 with a binary search over c.
 *
 * Follows foolbox 3's L2CarliniWagnerAttack (itself the original
 * l2_attack.py's algorithm). In tanh space, w0 = atanh((x0 - a)/b *
 * 0.999999) with a = (lo+hi)/2, b = (hi-lo)/2 (the factor keeps saturated
 * pixels movable); x(delta) = tanh(w0 + delta) b + a and
 * x_rec = x(0) ~ x0. Each binary-search step starts delta = 0 with a fresh
 * bias-corrected Adam (beta 0.9, 0.999, eps 1e-8) and minimises
 *     sum_i c_i max(0, z_y - max_{j!=y} z_j + kappa) + ||x - x_rec||_2^2
 * (targeted: max_{j!=t} z_j - z_t + kappa). After each step's Adam update:
 * abort early every ceil(I/10) iterations unless the batch loss fell to
 * 0.9999 of the previous check; then success at that x (argmax of
 * z + kappa e_y differs from y) records x when its L2 distance to x0 beats
 * the best so far. c: 10x while no success was seen, then bisection;
 * with >= 10 binary steps the last one uses the upper bound.
 */
#include "attack_internal.h"

/* Defaults: 9 binary steps, c0 1e-3, lr 1e-2, kappa 0, abort early; steps
 * 1000 (the references use 10000; torchattacks has no search: c = 1, 50
 * steps). Choices: the correct margin (max over j != y of the real
 * logits), not torchattacks' masked max that turns negative logits into 0
 * (ATTACKS.md 6.1, oracle O13); samples never fooled return x0 (foolbox
 * returns zeros with success = False). eps bounds the L2 norm of a success.
 */

typedef struct cw_state {
    void *block; /* first (dd__atk_state_free): every buffer below, one dd__alloc_views block */
    float *w0, *xrec, *delta, *m, *v, *xcur, *best; /* (B, d) */
    double *c, *lower, *upper, *bnorm;              /* (B) */
    int32_t *found;                                 /* (B) */
} cw_state;

static dd_status cw_create(dd_attack *a) {
    cw_state *s = dd__calloc(1, sizeof *s);
    DD_RETURN_IF(!s, DD_ERR_OUT_OF_MEMORY, "CW: out of memory");
    a->state = s;
    size_t B = (size_t)a->max_batch, img = B * a->d * sizeof(float);
    dd__view v[] = {
        DD__VIEW(s->w0, img),
        DD__VIEW(s->xrec, img),
        DD__VIEW(s->delta, img),
        DD__VIEW(s->m, img),
        DD__VIEW(s->v, img),
        DD__VIEW(s->xcur, img),
        DD__VIEW(s->best, img),
        DD__VIEW(s->c, B * sizeof(double)),
        DD__VIEW(s->lower, B * sizeof(double)),
        DD__VIEW(s->upper, B * sizeof(double)),
        DD__VIEW(s->bnorm, B * sizeof(double)),
        DD__VIEW(s->found, B * sizeof(int32_t)),
    };
    s->block = dd__alloc_views(v, DD__NVIEWS(v));
    if (!s->block) {
        dd__atk_state_free(a);
        return DD_ERROR(DD_ERR_OUT_OF_MEMORY, "CW: out of memory for %zu samples", B);
    }
    return DD_OK;
}

/* The CW margin (z_y - max_{j!=y} z_j, targeted the reverse) plus kappa,
 * with its logit gradient written to dz (scaled by c) when positive. */
static double cw_margin(const float *z, int K, int y, int targeted, float kappa, double c, float *dz) {
    int o = dd__argmax_except(z, K, y);
    double mg = targeted ? (double)z[o] - (double)z[y] : (double)z[y] - (double)z[o];
    mg += kappa;
    for (int j = 0; j < K; j++) dz[j] = 0.0f;
    if (mg > 0.0) {
        dz[targeted ? o : y] += (float)c;
        dz[targeted ? y : o] -= (float)c;
    }
    return mg > 0.0 ? mg : 0.0;
}

static int cw_success(const float *z, int K, int y, int targeted, float kappa) {
    int best = 0;
    for (int j = 1; j < K; j++) {
        float vj = z[j] + (j == y ? (targeted ? -kappa : kappa) : 0.0f);
        float vb = z[best] + (best == y ? (targeted ? -kappa : kappa) : 0.0f);
        if (vj > vb) best = j;
    }
    return targeted ? best == y : best != y;
}

static dd_status cw_run(dd_attack *a, const float *x, const int32_t *y, int n, float *out) {
    cw_state *s = a->state;
    const size_t d = a->d, count = (size_t)n * d;
    const int K = a->K, S = a->o.steps, targeted = a->o.targeted;
    const float kappa = a->o.confidence, lr = a->o.step_size;
    const double ca = 0.5 * ((double)a->o.box_lo + a->o.box_hi),
                 cb = 0.5 * ((double)a->o.box_hi - a->o.box_lo);
    const int period = (S + 9) / 10; /* foolbox: ceil(steps / 10) */
    const float b1 = 0.9f, b2 = 0.999f;

    for (size_t j = 0; j < count; j++) {
        /* 0.999999: foolbox/Carlini's factor keeping atanh finite at the box edges. */
        double w = atanh(((double)x[j] - ca) / cb * 0.999999);
        s->w0[j] = (float)w;
        s->xrec[j] = (float)(tanh(w) * cb + ca);
    }
    memcpy(s->best, x, count * sizeof(float));
    for (int i = 0; i < n; i++) {
        s->c[i] = a->o.initial_const;
        s->lower[i] = 0.0;
        s->upper[i] = INFINITY;
        s->bnorm[i] = INFINITY;
    }
    for (int bs = 0; bs < a->o.binary_steps; bs++) {
        if (a->o.binary_steps >= 10 && bs == a->o.binary_steps - 1)
            for (int i = 0; i < n; i++) s->c[i] = fmin(s->upper[i], 1e10);
        memset(s->delta, 0, count * sizeof(float));
        memset(s->m, 0, count * sizeof(float));
        memset(s->v, 0, count * sizeof(float));
        for (int i = 0; i < n; i++) s->found[i] = 0;
        double prev = INFINITY;
        for (int step = 0; step < S; step++) {
#pragma omp parallel for num_threads(a->nt) schedule(static)
            for (size_t j = 0; j < count; j++)
                s->xcur[j] = (float)(tanh((double)s->w0[j] + s->delta[j]) * cb + ca);
            DD_FORWARD(dd__atk_forward(a, s->xcur, n, a->logits));
            double loss = 0.0;
            for (int i = 0; i < n; i++) {
                loss += s->c[i] * cw_margin(a->logits + (size_t)i * K, K, y[i], targeted, kappa, s->c[i],
                                            a->dlogits + (size_t)i * K);
                double r2 = 0.0;
                for (size_t j = i * d; j < (size_t)(i + 1) * d; j++) {
                    double dv = (double)s->xcur[j] - s->xrec[j];
                    r2 += dv * dv;
                }
                loss += r2;
            }
            DD_FORWARD(dd__atk_vjp(a, a->dlogits, a->grad));
            const float bc1 = 1.0f - powf(b1, (float)(step + 1)), bc2 = 1.0f - powf(b2, (float)(step + 1));
#pragma omp parallel for num_threads(a->nt) schedule(static)
            for (size_t j = 0; j < count; j++) {
                double th = ((double)s->xcur[j] - ca) / cb; /* tanh(w0 + delta) */
                float g = (float)(((double)a->grad[j] + 2.0 * ((double)s->xcur[j] - s->xrec[j])) * cb *
                                  (1.0 - th * th));
                s->m[j] = b1 * s->m[j] + (1.0f - b1) * g;
                s->v[j] = b2 * s->v[j] + (1.0f - b2) * g * g;
                /* 1e-8: Adam's epsilon (foolbox, PyTorch). */
                s->delta[j] -= lr * (s->m[j] / bc1) / (sqrtf(s->v[j] / bc2) + 1e-8f);
            }
            if (a->o.abort_early && step % period == 0) {
                if (!(loss <= 0.9999 * prev)) break; /* 0.9999: the references' stall threshold */
                prev = loss;
            }
            for (int i = 0; i < n; i++) {
                if (!cw_success(a->logits + (size_t)i * K, K, y[i], targeted, kappa)) continue;
                s->found[i] = 1;
                double nrm = dd__atk_norm(s->xcur + (size_t)i * d, x + (size_t)i * d, d, DD_NORM_L2);
                if (nrm < s->bnorm[i]) {
                    s->bnorm[i] = nrm;
                    memcpy(s->best + (size_t)i * d, s->xcur + (size_t)i * d, d * sizeof(float));
                }
            }
        }
        for (int i = 0; i < n; i++) {
            if (s->found[i])
                s->upper[i] = s->c[i];
            else
                s->lower[i] = s->c[i];
            s->c[i] = isinf(s->upper[i]) ? s->c[i] * 10.0 : (s->lower[i] + s->upper[i]) / 2.0;
        }
    }
    memcpy(out, s->best, count * sizeof(float));
    return DD_OK;
}

const dd__attack_ops dd__cw_ops = {cw_create, dd__atk_state_free, cw_run};
