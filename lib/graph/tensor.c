/* lib/graph/tensor.c -- oneDNN memory descriptors of graph tensors.
 *
 * A tensor's layout (graph.h) maps to one oneDNN format tag; the batch
 * dimension is the pass's n, so the same buffer serves every batch size.
 */
#include "graph.h"

dnnl_format_tag_t dd__layout_tag(const dd__tensor *t) {
    switch (t->layout) {
    case DD__BLOCKED:
        return t->blk == 16 ? dnnl_nChw16c : dnnl_nChw8c;
    case DD__NCHW:
        return dnnl_nchw;
    default:
        return dnnl_nc;
    }
}

dd_status dd__tensor_md(const dd__tensor *t, int n, dnnl_memory_desc_t *md) {
    dnnl_dims_t d = {n, t->c, t->h, t->w};
    int nd = t->layout == DD__NC ? 2 : 4;
    DD_CHECK_DNNL(dnnl_memory_desc_init_by_tag(md, nd, d, dnnl_f32, dd__layout_tag(t)));
    return DD_OK;
}
