/* lib/engine/engine.h -- thin helpers over the oneDNN 2.6 C API (internal).
 *
 * Every primitive of a model is created through dd__prim_create(), which
 *  - creates it with the model's thread count (oneDNN freezes
 *    omp_get_max_threads() into a primitive at creation; we set the ICV of
 *    the calling thread for the duration of the call and restore it, so the
 *    host's OpenMP settings are unchanged when we return),
 *  - asks for a user-managed scratchpad and grows the model's one shared
 *    scratchpad buffer to fit (one model runs one primitive at a time),
 *  - refuses reference (`ref:`) implementations, which here always mean a
 *    layout mistake and run 100-1000x slower.
 * dd__exec() runs a primitive with the shared scratchpad and waits.
 * dd__reorder_* convert between layouts (a no-op when they are equal).
 */
#ifndef DD_LIB_ENGINE_H
#define DD_LIB_ENGINE_H

#include "../graph/graph.h"

/* A primitive with its descriptor and a memory object for the scratchpad. */
typedef struct dd__prim {
    dnnl_primitive_desc_t pd;
    dnnl_primitive_t prim;
    dnnl_memory_t scratch; /* NULL when the primitive needs none */
} dd__prim;

/* Creates pd and primitive for op_desc (a dnnl_*_desc_t); hint may be NULL.
 * attr may be NULL (a fresh one with user scratchpad is used). what names
 * the primitive in error messages. */
DD_INTERNAL dd_status dd__prim_create(dd__ctx *ctx, dd__prim *p, const void *op_desc,
                                      dnnl_primitive_attr_t attr, const dd__prim *hint, const char *what);
DD_INTERNAL void dd__prim_destroy(dd__prim *p);
/* Queried memory descriptor (dnnl_query_src_md etc.) of a primitive. */
DD_INTERNAL const dnnl_memory_desc_t *dd__prim_md(const dd__prim *p, dnnl_query_t what, int index);
/* Executes with the given args plus the scratchpad, then waits. */
DD_INTERNAL dd_status dd__exec(dd__ctx *ctx, const dd__prim *p, int nargs, dnnl_exec_arg_t *args);

/* Memory object for md with no buffer; dd__mem() points it at ptr. */
DD_INTERNAL dd_status dd__mem_create(dd__ctx *ctx, dnnl_memory_t *mem, const dnnl_memory_desc_t *md);
static inline dnnl_memory_t dd__mem(dnnl_memory_t mem, const void *ptr) {
    dnnl_memory_set_data_handle(mem, (void *)ptr);
    return mem;
}
DD_INTERNAL void dd__mem_destroy(dnnl_memory_t *mem);

/* Layout conversion from -> to; a plain copy when the descriptors are equal. */
typedef struct dd__reorder {
    dd__prim p; /* p.prim NULL: same layout */
    dnnl_memory_t src, dst;
    size_t bytes;
} dd__reorder;
DD_INTERNAL dd_status dd__reorder_create(dd__ctx *ctx, dd__reorder *r, const dnnl_memory_desc_t *from,
                                         const dnnl_memory_desc_t *to, int accumulate);
DD_INTERNAL dd_status dd__reorder_run(dd__ctx *ctx, const dd__reorder *r, const void *from, void *to);
DD_INTERNAL void dd__reorder_destroy(dd__reorder *r);

/* Model-level oneDNN objects (engine, stream, scratchpad). */
DD_INTERNAL dd_status dd__engine_init(dd__ctx *ctx);
DD_INTERNAL void dd__engine_fini(dd__ctx *ctx);

/* Plain memory descriptors. */
DD_INTERNAL dd_status dd__md_plain(dnnl_memory_desc_t *md, int ndims, const int64_t *dims);
DD_INTERNAL dd_status dd__md_tag(dnnl_memory_desc_t *md, int ndims, const int64_t *dims,
                                 dnnl_format_tag_t tag);

#endif
