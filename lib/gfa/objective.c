/* lib/gfa/objective.c -- dd_model_backward: the training objective's gradient.
 *
 * J = L + sum_t lambda_t R_t with L the model's training loss (cross-entropy
 * or MSE on probabilities, lib/loss/loss.h; dd_model_set_loss): without
 * hooks the plain backward pass (the planner's DD__PASS_BACKWARD), with
 * hooks GFA's passes 2-4 (gfa.c). This entry point lives beside GFA so that
 * the graph code never calls GFA: lib/gfa depends on lib/graph, not the
 * other way round.
 */
#include <math.h>
#include <string.h>

#include "../graph/graph_internal.h"
#include "../loss/loss.h"
#include "gfa.h"

/* The training loss, its gradient into the logits' grad, and stats. */
static dd_status seed_loss(dd_model *m, const int32_t *labels, dd_step_stats *stats) {
    int n = m->last_n, k = m->num_classes;
    double loss;
    int correct;
    const float *z = m->nodes[m->logits].out.data;
    float *dz = m->nodes[m->logits].out.grad;
    if (m->loss == DD_LOSS_MSE)
        dd__mse(z, labels, n, k, m->probs, dz, &loss, &correct);
    else
        dd__xent(z, labels, n, k, m->probs, dz, &loss, &correct);
    DD_RETURN_IF(!isfinite(loss), DD_ERR_NUMERIC, "backward: the loss is not finite");
    m->last_loss = loss;
    if (stats) {
        stats->loss = loss;
        stats->objective = loss;
        stats->correct = correct;
        stats->batch = n;
    }
    return DD_OK;
}

/* dd_model_backward after its argument checks; stats is full-size. */
static dd_status backward(dd_model *m, const int32_t *labels, dd_step_stats *stats) {
    DD_FORWARD(seed_loss(m, labels, stats));
    m->ctx.n = m->last_n;
    m->ctx.train = m->last_train;
    if (m->nhooks > 0) {
        dd__gfa_args a = {labels, stats};
        return dd__guarded_grads(m, dd__gfa_backward, &a);
    }
    return dd__guarded_grads(m, dd__plain_backward, NULL);
}

dd_status dd_model_backward(dd_model *m, const int32_t *labels, dd_step_stats *stats) {
    DD_RETURN_IF(!m, DD_ERR_INVALID_ARGUMENT, "dd_model_backward: model is NULL");
    DD_RETURN_IF(!m->built, DD_ERR_STATE, "dd_model_backward: the model is not built");
    DD_FORWARD(dd__stats_check(stats, "dd_model_backward"));
    DD_RETURN_IF(!m->have_forward, DD_ERR_STATE, "dd_model_backward: no forward pass to differentiate");
    DD_FORWARD(dd__check_labels(m, labels, m->last_n, "dd_model_backward"));
    dd_step_stats full;
    dd_step_stats_init(&full);
    dd_status s = backward(m, labels, stats ? &full : NULL);
    if (s == DD_OK) dd__stats_out(stats, &full); /* a failed pass leaves *stats untouched */
    return s;
}

dd_status dd_model_set_loss(dd_model *m, dd_loss_kind loss) {
    DD_RETURN_IF(!m, DD_ERR_INVALID_ARGUMENT, "dd_model_set_loss: model is NULL");
    DD_RETURN_IF(loss != DD_LOSS_CE && loss != DD_LOSS_MSE, DD_ERR_INVALID_ARGUMENT,
                 "dd_model_set_loss: unknown loss %d (DD_LOSS_CE, DD_LOSS_MSE)", (int)loss);
    m->loss = (int)loss;
    return DD_OK;
}

dd_status dd_model_get_loss(const dd_model *m, dd_loss_kind *loss) {
    DD_RETURN_IF(!m || !loss, DD_ERR_INVALID_ARGUMENT, "dd_model_get_loss: NULL argument");
    *loss = (dd_loss_kind)m->loss;
    return DD_OK;
}
