/* lib/graph/graph_internal.h -- functions shared by the graph files and the
 * node files' dd_model_add_* implementations (internal). */
#ifndef DD_LIB_GRAPH_INTERNAL_H
#define DD_LIB_GRAPH_INTERNAL_H

#include "graph.h"

/* Floats per sample of a (c, h, w) tensor in `layout` (blocks of blk
 * channels for DD__BLOCKED), padding included. */
DD_INTERNAL size_t dd__layout_sample_floats(dd__layout layout, int blk, int c, int h, int w);
/* Validates the common arguments of a dd_model_add_* call. */
DD_INTERNAL dd_status dd__graph_check_add(dd_model *m, const char *what, const dd_node *inputs, int ninputs,
                                          dd_node *out);
/* Appends a node; `state` (owned by the node from now on, freed by
 * ops->destroy) and the output shape (ndims, c, h, w, layout) are given. */
DD_INTERNAL dd_status dd__graph_append(dd_model *m, const dd__node_ops *ops, const int *inputs, int ninputs,
                                       const char *name, void *state, const dd__tensor *shape, int *id);
/* Frees the activation arena (the next forward pass allocates it again):
 * used when the hook set changes, so that the old and the new layout are
 * never resident together. */
DD_INTERNAL void dd__model_release_activations(dd_model *m);
/* (Re)allocates the activation arena, with GFA buffers when gfa != 0. */
DD_INTERNAL dd_status dd__model_alloc_activations(dd_model *m, int gfa);
/* The plan of node n for batch ctx->n, created on first use. */
DD_INTERNAL dd_status dd__node_plan(dd__node *n, dd__ctx *ctx, void **plan);
/* The plan of a backward pass (lib/graph/schedule.c), kept in
 * m->sched[pass->kind] until the next pass of that kind. */
DD_INTERNAL dd_status dd__schedule_backward(dd_model *m, const dd__bpass *pass, const dd__bsched **out);
DD_INTERNAL dd_status dd__schedule_alloc(dd_model *m, dd__pass_kind kind);
DD_INTERNAL void dd__schedule_free(dd_model *m);
/* Runs a backward pass as planned. The seed is already in the logits
 * tensor's gradient buffer: grad, or for DD__PASS_GFA4 tan (the adjoints
 * live in the tangent slots there). Returns the schedule that ran. */
DD_INTERNAL dd_status dd__graph_backward(dd_model *m, const dd__bpass *pass, const dd__bsched **ran);
/* DD_ERR_INVALID_ARGUMENT unless every label is in [0, K) (fn names the caller). */
DD_INTERNAL dd_status dd__check_labels(const dd_model *m, const int32_t *labels, int n, const char *fn);
/* Runs fn with the parameter gradients protected: on failure (or
 * non-finite gradients, DD_ERR_NUMERIC) they are restored to their values
 * before the call. */
DD_INTERNAL dd_status dd__guarded_grads(dd_model *m, dd_status (*fn)(dd_model *, void *), void *arg);
/* fn for dd__guarded_grads: the plain backward pass (DD__PASS_BACKWARD). */
DD_INTERNAL dd_status dd__plain_backward(dd_model *m, void *arg);
/* The gradient buffer of tensor t in a pass of this kind. */
static inline float *dd__pass_grad(const dd__tensor *t, dd__pass_kind kind) {
    return kind == DD__PASS_GFA4 ? t->tan : t->grad;
}
/* Plans this pass's fusion chains (node->fz, node->absorbed) for a
 * training (train = 1) or eval pass; none if !enable (lib/graph/fusion.c). */
DD_INTERNAL void dd__fusion_plan(dd_model *m, int train, int enable);
/* 1 if a GFA hook is on tensor t. */
DD_INTERNAL int dd__tensor_hooked(const dd_model *m, int t);
/* Undoes the chain headed by node `head` (its kernel was refused). */
DD_INTERNAL void dd__fusion_drop(dd_model *m, int head);
/* 1 if the last forward folded a batch norm into a weight layer (its
 * input, the layer's output, was not materialised). */
DD_INTERNAL int dd__fusion_folded_bn(const dd_model *m);
/* dst += src over count floats (OpenMP). */
DD_INTERNAL void dd__axpy1(float *dst, const float *src, size_t count, int nthreads);

#endif
