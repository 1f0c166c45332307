/* lib/engine/engine.c -- primitive creation/execution and reorders over oneDNN.
 *
 * See engine.h for the contract. The scratchpad is one buffer per model
 * (ctx->scratchpad), grown when a new primitive needs more; every primitive's
 * scratchpad memory object is re-pointed at it before each execution, since
 * growth may move it. Growth only happens while creating plans (first use of
 * a batch size), never during a step that reuses plans.
 */
#define _POSIX_C_SOURCE 200809L
#include "engine.h"

#include <omp.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Runs `body` with the calling thread's OpenMP ICV set to the model's thread
 * count, restoring it afterwards (see engine.h). */
#define DD__WITH_THREADS(ctx, body)                                    \
    do {                                                               \
        int dd_old_nt_ = omp_get_max_threads();                        \
        if ((ctx)->nthreads > 0) omp_set_num_threads((ctx)->nthreads); \
        body;                                                          \
        omp_set_num_threads(dd_old_nt_);                               \
    } while (0)

int dd__act_block(void) {
    const char *env = getenv("DD_ACT_BLOCK");
    if (env && (!strcmp(env, "8") || !strcmp(env, "16"))) return atoi(env);
    unsigned isa = (unsigned)dnnl_get_effective_cpu_isa();
    unsigned avx512 = (unsigned)dnnl_cpu_isa_avx512_core;
    return (isa & avx512) == avx512 ? 16 : 8;
}

dd_status dd__engine_init(dd__ctx *ctx) {
    /* On a CPU without AVX-512, oneDNN has no kernel for some of our blocked
     * (16-channel) layouts and offers its reference implementation; accept it
     * there (slow but correct) rather than fail. With AVX-512 a reference
     * kernel always means a layout mistake, and is refused. */
    int isa = (int)dnnl_get_effective_cpu_isa();
    ctx->allow_ref = (isa & (int)dnnl_cpu_isa_avx512_core) != (int)dnnl_cpu_isa_avx512_core;
    DD_CHECK_DNNL(dnnl_engine_create(&ctx->eng, dnnl_cpu, 0));
    dnnl_status_t st = dnnl_stream_create(&ctx->strm, ctx->eng, dnnl_stream_default_flags);
    if (st != dnnl_success) {
        dnnl_engine_destroy(ctx->eng);
        ctx->eng = NULL;
        DD_CHECK_DNNL(st);
    }
    return DD_OK;
}

void dd__engine_fini(dd__ctx *ctx) {
    if (ctx->strm) dnnl_stream_destroy(ctx->strm);
    if (ctx->eng) dnnl_engine_destroy(ctx->eng);
    dd__free_aligned(ctx->scratchpad);
    ctx->strm = NULL;
    ctx->eng = NULL;
    ctx->scratchpad = NULL;
    ctx->scratchpad_bytes = 0;
}

static dd_status grow_scratchpad(dd__ctx *ctx, size_t bytes) {
    if (bytes <= ctx->scratchpad_bytes) return DD_OK;
    void *p = dd__aligned_alloc(bytes);
    DD_RETURN_IF(!p, DD_ERR_OUT_OF_MEMORY, "scratchpad of %zu bytes", bytes);
    dd__free_aligned(ctx->scratchpad);
    ctx->scratchpad = p;
    ctx->scratchpad_bytes = bytes;
    return DD_OK;
}

dd_status dd__prim_create(dd__ctx *ctx, dd__prim *p, const void *op_desc, dnnl_primitive_attr_t attr,
                          const dd__prim *hint, const char *what) {
    memset(p, 0, sizeof *p);
    dnnl_primitive_attr_t own = NULL;
    if (!attr) {
        DD_CHECK_DNNL(dnnl_primitive_attr_create(&own));
        attr = own;
    }
    dnnl_status_t st = dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user);
    if (st == dnnl_success) {
        DD__WITH_THREADS(
            ctx, st = dnnl_primitive_desc_create(&p->pd, op_desc, attr, ctx->eng, hint ? hint->pd : NULL));
    }
    if (own) dnnl_primitive_attr_destroy(own);
    if (st != dnnl_success) {
        p->pd = NULL;
        return dd__dnnl_error(st, what, __FILE__, __LINE__);
    }
    const char *impl = "";
    dnnl_primitive_desc_query(p->pd, dnnl_query_impl_info_str, 0, &impl);
    dd__log(DD_LOG_DEBUG, "%s: %s", what, impl);
    if (strncmp(impl, "ref", 3) == 0 && ctx->allow_ref && !ctx->has_alternative) {
        dd__log(DD_LOG_WARN, "%s: only oneDNN's reference implementation '%s' on this CPU (slow)", what,
                impl);
    } else if (strncmp(impl, "ref", 3) == 0) {
        dd__prim_destroy(p);
        return DD_ERROR(DD_ERR_BACKEND,
                        "%s: oneDNN offers only the reference implementation '%s'"
                        " (a layout combination without a fast kernel)",
                        what, impl);
    }
    DD__WITH_THREADS(ctx, st = dnnl_primitive_create(&p->prim, p->pd));
    if (st != dnnl_success) {
        p->prim = NULL;
        dd__prim_destroy(p);
        return dd__dnnl_error(st, what, __FILE__, __LINE__);
    }
    const dnnl_memory_desc_t *smd = dnnl_primitive_desc_query_md(p->pd, dnnl_query_scratchpad_md, 0);
    size_t sbytes = smd ? dnnl_memory_desc_get_size(smd) : 0;
    if (sbytes > 0) {
        dd_status s = grow_scratchpad(ctx, sbytes);
        if (s == DD_OK) s = dd__mem_create(ctx, &p->scratch, smd);
        if (s != DD_OK) {
            dd__prim_destroy(p);
            return s;
        }
    }
    return DD_OK;
}

void dd__prim_destroy(dd__prim *p) {
    if (!p) return;
    if (p->scratch) dnnl_memory_destroy(p->scratch);
    if (p->prim) dnnl_primitive_destroy(p->prim);
    if (p->pd) dnnl_primitive_desc_destroy(p->pd);
    memset(p, 0, sizeof *p);
}

const dnnl_memory_desc_t *dd__prim_md(const dd__prim *p, dnnl_query_t what, int index) {
    return dnnl_primitive_desc_query_md(p->pd, what, index);
}

dd_status dd__exec(dd__ctx *ctx, const dd__prim *p, int nargs, dnnl_exec_arg_t *args) {
    dnnl_exec_arg_t all[16];
    if (nargs > 15) return DD_ERROR(DD_ERR_BACKEND, "too many primitive arguments (%d)", nargs);
    memcpy(all, args, sizeof(dnnl_exec_arg_t) * (size_t)nargs);
    if (p->scratch) {
        dnnl_memory_set_data_handle(p->scratch, ctx->scratchpad);
        all[nargs].arg = DNNL_ARG_SCRATCHPAD;
        all[nargs].memory = p->scratch;
        nargs++;
    }
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    DD_CHECK_DNNL(dnnl_primitive_execute(p->prim, ctx->strm, nargs, all));
    DD_CHECK_DNNL(dnnl_stream_wait(ctx->strm));
    clock_gettime(CLOCK_MONOTONIC, &t1);
    ctx->prim_seconds += (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
    return DD_OK;
}

dd_status dd__mem_create(dd__ctx *ctx, dnnl_memory_t *mem, const dnnl_memory_desc_t *md) {
    *mem = NULL;
    DD_CHECK_DNNL(dnnl_memory_create(mem, md, ctx->eng, DNNL_MEMORY_NONE));
    return DD_OK;
}

void dd__mem_destroy(dnnl_memory_t *mem) {
    if (*mem) dnnl_memory_destroy(*mem);
    *mem = NULL;
}

dd_status dd__reorder_create(dd__ctx *ctx, dd__reorder *r, const dnnl_memory_desc_t *from,
                             const dnnl_memory_desc_t *to, int accumulate) {
    memset(r, 0, sizeof *r);
    r->bytes = dnnl_memory_desc_get_size(to);
    if (!accumulate && dnnl_memory_desc_equal(from, to)) return DD_OK;
    dnnl_primitive_attr_t attr = NULL;
    DD_CHECK_DNNL(dnnl_primitive_attr_create(&attr));
    dnnl_status_t st = dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user);
    if (st == dnnl_success && accumulate) {
        dnnl_post_ops_t po = NULL;
        st = dnnl_post_ops_create(&po);
        if (st == dnnl_success) st = dnnl_post_ops_append_sum(po, 1.0f);
        if (st == dnnl_success) st = dnnl_primitive_attr_set_post_ops(attr, po);
        if (po) dnnl_post_ops_destroy(po);
    }
    if (st == dnnl_success) {
        DD__WITH_THREADS(
            ctx, st = dnnl_reorder_primitive_desc_create(&r->p.pd, from, ctx->eng, to, ctx->eng, attr));
    }
    dnnl_primitive_attr_destroy(attr);
    if (st != dnnl_success) {
        r->p.pd = NULL;
        return dd__dnnl_error(st, "reorder", __FILE__, __LINE__);
    }
    DD__WITH_THREADS(ctx, st = dnnl_primitive_create(&r->p.prim, r->p.pd));
    dd_status s = DD_OK;
    if (st != dnnl_success) {
        r->p.prim = NULL;
        s = dd__dnnl_error(st, "reorder", __FILE__, __LINE__);
    }
    const dnnl_memory_desc_t *smd =
        s == DD_OK ? dnnl_primitive_desc_query_md(r->p.pd, dnnl_query_scratchpad_md, 0) : NULL;
    if (smd && dnnl_memory_desc_get_size(smd) > 0) {
        s = grow_scratchpad(ctx, dnnl_memory_desc_get_size(smd));
        if (s == DD_OK) s = dd__mem_create(ctx, &r->p.scratch, smd);
    }
    if (s == DD_OK) s = dd__mem_create(ctx, &r->src, from);
    if (s == DD_OK) s = dd__mem_create(ctx, &r->dst, to);
    if (s != DD_OK) dd__reorder_destroy(r);
    return s;
}

dd_status dd__reorder_run(dd__ctx *ctx, const dd__reorder *r, const void *from, void *to) {
    if (!r->p.prim) {
        if (from != to) memcpy(to, from, r->bytes);
        return DD_OK;
    }
    dnnl_exec_arg_t a[2] = {{DNNL_ARG_FROM, dd__mem(r->src, from)}, {DNNL_ARG_TO, dd__mem(r->dst, to)}};
    return dd__exec(ctx, &r->p, 2, a);
}

void dd__reorder_destroy(dd__reorder *r) {
    dd__prim_destroy(&r->p);
    dd__mem_destroy(&r->src);
    dd__mem_destroy(&r->dst);
}

dd_status dd__md_tag(dnnl_memory_desc_t *md, int ndims, const int64_t *dims, dnnl_format_tag_t tag) {
    dnnl_dims_t d;
    for (int i = 0; i < ndims; i++) d[i] = dims[i];
    DD_CHECK_DNNL(dnnl_memory_desc_init_by_tag(md, ndims, d, dnnl_f32, tag));
    return DD_OK;
}

dd_status dd__md_plain(dnnl_memory_desc_t *md, int ndims, const int64_t *dims) {
    static const dnnl_format_tag_t tags[] = {dnnl_format_tag_undef, dnnl_a, dnnl_ab, dnnl_abc, dnnl_abcd};
    if (ndims < 1 || ndims > 4) return DD_ERROR(DD_ERR_INVALID_ARGUMENT, "ndims %d", ndims);
    return dd__md_tag(md, ndims, dims, tags[ndims]);
}
