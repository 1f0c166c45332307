/* lib/graph/fusion.c -- which nodes a forward pass runs as one fused kernel.
 *
 * Memory-bound layers (batch norm, ReLU, residual add) cost a pass over
 * their tensor each; oneDNN can apply them inside the producing kernel
 * (post-ops) and an eval-mode batch norm is an affine map that folds into
 * the preceding convolution's weights. Before each forward pass, for each
 * node whose type can absorb followers (ops->fuse_caps for the pass's mode),
 * the chain is grown while the current tensor
 *   - is not the logits, has exactly one consumer, and carries no GFA hook,
 *   - and that consumer is, in this order: a batch norm (eval mode, directly
 *     after the head), an add whose other operand was computed before the
 *     head and shares the layout, a ReLU (always the last link).
 * (GFA reads the hooked tensors, so they stay materialised.) Everything is
 * off with dd_model_options.fuse_layers = 0. A head whose fused kernel oneDNN
 * refuses is remembered in node->fuse_refused and runs unfused afterwards.
 */
#include "graph_internal.h"

int dd__tensor_hooked(const dd_model *m, int tensor) {
    for (int h = 0; h < m->nhooks; h++)
        if (m->hooks[h].tensor == tensor) return 1;
    return 0;
}

/* The node reading tensor t (t has exactly one consumer). */
static int consumer(const dd_model *m, int t) {
    for (int j = t + 1; j <= m->logits; j++)
        for (int k = 0; k < m->nodes[j].ninputs; k++)
            if (m->nodes[j].inputs[k] == t) return j;
    return -1;
}

static void reset(dd__node *n) {
    n->fz = (dd__fusion){.bn = -1, .add = -1, .add_other = -1, .relu = -1, .end = n->id};
    n->absorbed = 0;
}

static void grow(dd_model *m, dd__node *head, unsigned caps, int train) {
    dd__fusion *f = &head->fz;
    int cur = head->id;
    for (;;) {
        const dd__tensor *t = &m->nodes[cur].out;
        if (cur == m->logits || t->consumers != 1 || dd__tensor_hooked(m, cur)) break;
        int j = consumer(m, cur);
        if (j < 0) break;
        const dd__node *nx = &m->nodes[j];
        if (nx->absorbed) break;
        unsigned as = nx->ops->fuse_as; /* the link the follower can be */
        if (as == DD__FUSE_BN && (caps & DD__FUSE_BN) && !train && cur == head->id) {
            f->bn = j;
        } else if (as == DD__FUSE_ADD && (caps & DD__FUSE_ADD) && f->add < 0) {
            int other = nx->inputs[0] == cur ? nx->inputs[1] : nx->inputs[0];
            if (other == cur || other >= head->id) break;
            if (m->nodes[other].out.layout != t->layout || nx->out.layout != t->layout) break;
            f->add = j;
            f->add_other = other;
        } else if (as == DD__FUSE_RELU && (caps & DD__FUSE_RELU)) {
            f->relu = j;
            cur = j;
            break;
        } else {
            break;
        }
        cur = j;
    }
    if (cur == head->id) return;
    f->end = cur;
    int absorbed[3] = {f->bn, f->add, f->relu};
    for (int k = 0; k < 3; k++)
        if (absorbed[k] >= 0) m->nodes[absorbed[k]].absorbed = 1;
}

void dd__fusion_plan(dd_model *m, int train, int enable) {
    for (int i = 0; i <= m->logits; i++) reset(&m->nodes[i]);
    if (!enable || !m->opts.fuse_layers) return;
    for (int i = 1; i <= m->logits; i++) {
        dd__node *n = &m->nodes[i];
        unsigned caps = n->ops->fuse_caps[train ? 1 : 0];
        if (n->absorbed || !caps || n->fuse_refused[train ? 1 : 0]) continue;
        grow(m, n, caps, train);
    }
}

void dd__fusion_drop(dd_model *m, int head) {
    dd__node *n = &m->nodes[head];
    int absorbed[3] = {n->fz.bn, n->fz.add, n->fz.relu};
    for (int k = 0; k < 3; k++)
        if (absorbed[k] >= 0) m->nodes[absorbed[k]].absorbed = 0;
    reset(n);
}

int dd__fusion_folded_bn(const dd_model *m) {
    for (int i = 1; i <= m->logits; i++)
        if (m->nodes[i].fz.bn >= 0) return 1;
    return 0;
}
