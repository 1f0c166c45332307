/* lib/attacks/adv_train.c -- PGD adversarial training step (Madry et al.).
 *
 * The helper for the common case of the host loop in DESIGN.md:
 *     x_adv = attack(x)                      (DD_EVAL: batch-norm untouched)
 *     zero_grad; forward(x_adv, DD_TRAIN); backward(labels); optimizer step
 * written only against the public API (the attack writes into its own
 * staging buffer, so the caller needs no x_adv buffer). The backward is
 * dd_model_backward, so GFA hooks set on the model apply to the
 * adversarial batch exactly as in a plain step. Generating x_adv in eval
 * mode follows torchattacks (which forces model.eval() during attacks);
 * some PGD-AT code generates in train mode, which moves batch-norm
 * statistics with adversarial batches twice per step.
 */
#include "attack_internal.h"

dd_status dd_attack_train_step(dd_attack *a, dd_optimizer *opt, const float *x, const int32_t *labels, int n,
                               float *x_adv_out, dd_step_stats *stats) {
    DD_RETURN_IF(!a || !opt, DD_ERR_INVALID_ARGUMENT, "dd_attack_train_step: attack or optimizer is NULL");
    DD_FORWARD(dd__stats_check(stats, "dd_attack_train_step"));
    DD_FORWARD(dd_attack_run(a, x, labels, n, a->out, NULL));
    if (x_adv_out) memcpy(x_adv_out, a->out, (size_t)n * a->d * sizeof(float));
    DD_FORWARD(dd_model_zero_grad(a->m));
    DD_FORWARD(dd_model_forward(a->m, a->out, n, DD_TRAIN, NULL));
    dd_step_stats full;
    dd_step_stats_init(&full);
    DD_FORWARD(dd_model_backward(a->m, labels, &full));
    DD_FORWARD(dd_optimizer_step(opt));
    dd__stats_out(stats, &full);
    return DD_OK;
}
