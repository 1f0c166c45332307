/* lib/nodes/conv_fewc.h -- backward-data of image-layer convolutions (internal).
 *
 * For a convolution whose input has few channels (IC <= 4) in plain NCHW,
 * whose output is nChw16c and whose kernel is at most 16x16; see conv_fewc.c.
 */
#ifndef DD_LIB_NODES_CONV_FEWC_H
#define DD_LIB_NODES_CONV_FEWC_H

#include "../graph/graph.h"

#define DD__FEWC_MAX_IC 4
#define DD__FEWC_MAX_K 16 /* kernel height and width */

typedef struct dd__conv_fewc_geom {
    int ic, ih, iw; /* input: (IC, IH, IW), plain */
    int oc, oh, ow; /* output: (OC, OH, OW), nChw16c */
    int kh, kw, sh, sw, ph, pw;
} dd__conv_fewc_geom;

/* Whether the kernel applies to a convolution from in to out. */
DD_INTERNAL int dd__conv_fewc_eligible(const dd__tensor *in, const dd__tensor *out, int kh, int kw);
/* Floats of the packed weights. */
DD_INTERNAL size_t dd__conv_fewc_pack_floats(int oc, int ic, int kh, int kw);
/* wp = w (plain (OC, IC, KH, KW)) times scale[oc] (NULL: 1) packed as
 * [OC/16][IC][KH][KW][16], zero past OC. */
DD_INTERNAL void dd__conv_fewc_pack(const float *w, const float *scale, int oc, int ic, int kh, int kw,
                                    float *wp);
/* dx (n, IC, IH, IW) plain = backward-data of dy (n, OC, OH, OW) nChw16c
 * with the packed weights; overwrites dx. */
DD_INTERNAL void dd__conv_fewc_bwd_data(const dd__conv_fewc_geom *g, int n, const float *wp, const float *dy,
                                        float *dx, int nthreads);

#endif
