/* lib/nodes/registry.c -- node types by their checkpoint name. */
#include <string.h>

#include "../graph/graph.h"

static const dd__node_ops *const all_ops[] = {
    &dd__input_ops,     &dd__normalize_ops, &dd__conv2d_ops,  &dd__linear_ops,
    &dd__relu_ops,      &dd__maxpool_ops,   &dd__avgpool_ops, &dd__gavgpool_ops,
    &dd__batchnorm_ops, &dd__add_ops,       &dd__flatten_ops,
};

const dd__node_ops *dd__node_ops_by_name(const char *name) {
    if (!name) return NULL;
    for (size_t i = 0; i < sizeof all_ops / sizeof all_ops[0]; i++)
        if (strcmp(all_ops[i]->name, name) == 0) return all_ops[i];
    return NULL;
}
