/* lib/nodes/pool.h -- configuration shared by max and average pooling (internal). */
#ifndef DD_LIB_NODES_POOL_H
#define DD_LIB_NODES_POOL_H

#include "../graph/graph_internal.h"

typedef struct dd__pool_cfg {
    int kh, kw, sh, sw, ph, pw;
    int oh, ow;
} dd__pool_cfg;

/* Validates opts against the input tensor and fills cfg (output size
 * floor((H + 2p - k) / s) + 1). what names the caller in messages. */
DD_INTERNAL dd_status dd__pool_config(const dd__tensor *in, const dd_pool_options *opts, const char *what,
                                      dd__pool_cfg *cfg);
/* Appends the pooling node (state: a copy of cfg). */
DD_INTERNAL dd_status dd__pool_append(dd_model *m, const dd__node_ops *ops, dd_node input,
                                      const dd_pool_options *opts, const char *what, dd_node *out);
DD_INTERNAL dd_status dd__pool_describe(const dd__node *n, void *json_object);
DD_INTERNAL void dd__pool_info(const dd__node *n, dd_node_info *info);

#endif
