/* lib/graph/graph_internal.h -- functions shared by the graph files and the
 * node files' dd_model_add_* implementations (internal). */
#ifndef DD_LIB_GRAPH_INTERNAL_H
#define DD_LIB_GRAPH_INTERNAL_H

#include "graph.h"

/* Floats per sample of a (c, h, w) tensor in `layout` (blocks of blk
 * channels for DD__BLOCKED), padding included. */
DD_INTERNAL size_t dd__layout_sample_floats(dd__layout layout, int blk, int c, int h, int w);
/* Validates the common arguments of a dd_model_add_* call. */
DD_INTERNAL dd_status dd__graph_check_add(dd_model *m, const char *what, const dd_node *inputs,
                                          int ninputs, dd_node *out);
/* Appends a node; `state` (owned by the node from now on, freed by
 * ops->destroy) and the output shape (ndims, c, h, w, layout) are given. */
DD_INTERNAL dd_status dd__graph_append(dd_model *m, const dd__node_ops *ops, const int *inputs,
                                       int ninputs, const char *name, void *state,
                                       const dd__tensor *shape, int *id);
/* Frees the activation arena (the next forward pass allocates it again):
 * used when the hook set changes, so that the old and the new layout are
 * never resident together. */
DD_INTERNAL void dd__model_release_activations(dd_model *m);
/* (Re)allocates the activation arena, with GFA buffers when gfa != 0. */
DD_INTERNAL dd_status dd__model_alloc_activations(dd_model *m, int gfa);
/* The plan of node n for batch ctx->n, created on first use. */
DD_INTERNAL dd_status dd__node_plan(dd__node *n, dd__ctx *ctx, void **plan);
/* Backward pass from the logits gradient already in the logits tensor's
 * grad: every tensor's grad where needed; parameter gradients if
 * want_params; the input's gradient if want_input. With inject (GFA pass 4)
 * each tensor's bar buffer (where bar_nonzero) is added to its gradient
 * once all its consumers have contributed; hooks then do not mark tensors. */
DD_INTERNAL dd_status dd__graph_backward(dd_model *m, int want_input, int want_params, int inject);
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
