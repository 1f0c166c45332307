/* lib/attacks/pgd.c -- projected gradient descent: Linf, L2, and TRADES' KL
 * inner maximisation.
 *
 * PGD_LINF (torchattacks PGD, Madry et al.): eps 8/255, step 2/255, 10
 *   steps, random start x + U(-eps, eps) clipped to the box; each step
 *   x += step * sign(g), then clamp to the eps ball and the box. Returns the
 *   last iterate (no best-loss tracking, no early stop), as every reference.
 * PGD_L2 (torchattacks PGDL2): eps 1.0, step 0.2, 10 steps, random start of
 *   radius r * eps with r ~ U(0, 1) along a Gaussian direction (uniform in
 *   the radius, not in the ball's volume: torchattacks; foolbox samples the
 *   volume); each step x += step * g / (||g||_2 + 1e-10), then
 *   delta *= min(1, eps/||delta||) and the box clip, sequentially (not the
 *   exact projection onto ball and box; every library does this).
 */
#include "attack_internal.h"

/* TRADES_KL (Zhang et al.'s trades.py): eps 0.031, step 0.007, 10 steps,
 *   start x + 0.001 N(0, 1) (not clipped, as the reference), ascent on
 *   KL(softmax(z(x)) || softmax(z(x'))) with sign steps, Linf projection
 *   and box clip. The clean logits are the DD_EVAL ones, as the reference
 *   generates x' with the model in eval mode.
 * Choices: gradients are of the per-sample loss sum; torchattacks uses the
 * batch mean, which changes nothing for sign steps and only the scale
 * against the 1e-10 guard for L2. Targeted mode (labels are targets)
 * ascends -CE(z, t). Random draws are taken sample by sample in order.
 */

static dd_status pgd_run(dd_attack *a, const float *x, const int32_t *y, int n, float *out) {
    const dd_attack_kind kind = a->o.kind;
    const size_t d = a->d, count = (size_t)n * d;
    const float eps = a->o.eps, alpha = a->o.step_size;
    const int l2 = kind == DD_ATTACK_PGD_L2, trades = kind == DD_ATTACK_TRADES_KL;
    dd__loss loss = trades ? DD__LOSS_KL : (a->o.targeted ? DD__LOSS_CE_TARGET : DD__LOSS_CE);

    memcpy(out, x, count * sizeof(float));
    if (a->o.random_start) {
        float *noise = a->grad; /* free until the first gradient */
        if (trades) {
            dd__atk_normal(a, noise, count);
            for (size_t j = 0; j < count; j++) out[j] = x[j] + 0.001f * noise[j];
        } else if (l2) {
            for (int i = 0; i < n; i++) {
                float *v = noise + (size_t)i * d;
                dd__atk_normal(a, v, d);
                double r = dd__rng_uniform(&a->rng), s2 = 0.0;
                for (size_t j = 0; j < d; j++) s2 += (double)v[j] * v[j];
                double f = s2 > 0.0 ? r * (double)eps / sqrt(s2) : 0.0;
                for (size_t j = 0; j < d; j++) out[i * d + j] = (float)((double)x[i * d + j] + f * v[j]);
            }
            dd__atk_clip(a, out, count);
        } else {
            dd__atk_uniform(a, noise, count, -eps, eps);
            for (size_t j = 0; j < count; j++) out[j] = x[j] + noise[j];
            dd__atk_clip(a, out, count);
        }
    }
    for (int s = 0; s < a->o.steps; s++) {
        DD_FORWARD(dd__atk_loss_grad(a, out, n, loss, y, y, a->clean_logits, NULL, a->grad, NULL));
        const float *g = a->grad;
        if (l2) {
#pragma omp parallel for num_threads(a->nt) schedule(static)
            for (int i = 0; i < n; i++) {
                const float *gi = g + (size_t)i * d;
                float *oi = out + (size_t)i * d;
                double s2 = 0.0;
                for (size_t j = 0; j < d; j++) s2 += (double)gi[j] * gi[j];
                /* 1e-10: torchattacks' eps_for_division. */
                double f = (double)alpha / (sqrt(s2) + 1e-10);
                for (size_t j = 0; j < d; j++) oi[j] = (float)((double)oi[j] + f * gi[j]);
            }
            dd__atk_project_l2(a, out, x, n, eps, 0.0);
        } else {
#pragma omp parallel for num_threads(a->nt) schedule(static)
            for (int i = 0; i < n; i++) {
                float *oi = out + (size_t)i * d;
                const float *gi = g + (size_t)i * d;
#pragma omp simd
                for (size_t j = 0; j < d; j++) oi[j] += alpha * dd__signf(gi[j]);
            }
            dd__atk_project_linf(a, out, x, n, eps);
        }
    }
    return DD_OK;
}

const dd__attack_ops dd__pgd_ops = {NULL, NULL, pgd_run};
