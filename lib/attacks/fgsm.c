/* lib/attacks/fgsm.c -- Fast Gradient Sign Method (Goodfellow et al.).
 *
 *     x_adv = clip_box(x + eps * sign(grad_x L)),  L = CE(z, y)
 *     targeted: L = -CE(z, t), so the step moves towards the target t.
 *
 * Defaults (torchattacks FGSM): eps = 8/255, no random start. sign(0) = 0,
 * so coordinates with a zero gradient stay untouched (ATTACKS.md 2.3).
 * Choices: torchattacks takes the gradient of the batch *mean* CE and
 * foolbox of the sum; the sign makes the two identical, and we use the
 * per-sample sum (no 1/N). One forward and one input-gradient pass.
 */
#include "attack_internal.h"

static dd_status fgsm_run(dd_attack *a, const float *x, const int32_t *y, int n, float *out) {
    const int targeted = a->o.targeted;
    DD_FORWARD(dd__atk_loss_grad(a, x, n, targeted ? DD__LOSS_CE_TARGET : DD__LOSS_CE, y, y, NULL, NULL,
                                 a->grad, NULL));
    const float eps = a->o.eps, lo = a->o.box_lo, hi = a->o.box_hi;
    const float *g = a->grad;
#pragma omp parallel for num_threads(a->nt) schedule(static)
    for (int i = 0; i < n; i++) {
        const size_t o = (size_t)i * a->d;
#pragma omp simd
        for (size_t j = o; j < o + a->d; j++) out[j] = dd__clampf(x[j] + eps * dd__signf(g[j]), lo, hi);
    }
    return DD_OK;
}

const dd__attack_ops dd__fgsm_ops = {NULL, NULL, fgsm_run};
