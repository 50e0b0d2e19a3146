/* eightbit_runtime.h: the integer arithmetic shared by every layer eightbit generates.
 *
 * The rules are the integer engine's (docs/numerics.md §1.8, §E.2, docs/numerics-codegen.md):
 * int32 accumulators, and a requantization that reproduces ONNX Runtime's IEEE single
 * precision (binary32) arithmetic in integers only: round to 24 significant bits (what
 * binary32 keeps), twice, then round half to even. int64 intermediates, integers only, no
 * division, no allocation.
 * Every function is static inline: the compiler inlines it into the layer loops, and a
 * program may include this file from several generated models.
 */
#ifndef EIGHTBIT_RUNTIME_H
#define EIGHTBIT_RUNTIME_H

#include <stdint.h>

/* C99 leaves the right shift of a negative value to the implementation; the rounding below
 * needs it arithmetic (floor division by 2^t), as GCC, Clang, Arm Compiler and IAR do.
 * A compiler that shifts logically stops here. */
typedef char eb_requires_arithmetic_right_shift[((-5 >> 1) == -3 && ((int64_t)-5 >> 1) == -3) ? 1 : -1];

/* Status codes of NAME_run. */
#define EB_OK 0
#define EB_ERROR_NULL_POINTER 1
#define EB_ERROR_OVERFLOW 2 /* an accumulator left int32: the engine refuses it too */

/* The number of significant bits of v (0 for 0), by halving: portable C99, no builtins. */
static inline int32_t eb_bit_length(uint64_t v)
{
    int32_t n = 0;
    if (v >> 32) { n += 32; v >>= 32; }
    if (v >> 16) { n += 16; v >>= 16; }
    if (v >> 8) { n += 8; v >>= 8; }
    if (v >> 4) { n += 4; v >>= 4; }
    if (v >> 2) { n += 2; v >>= 2; }
    if (v >> 1) { n += 1; v >>= 1; }
    return n + (int32_t)v;
}

/* round_half_even(v / 2^s) for s >= 1: adding 2^(s-1) - 1 carries into the quotient when the
 * remainder is above one half; at exactly one half the quotient's parity bit decides. */
static inline int64_t eb_round_shift(int64_t v, int32_t s)
{
    return (v + ((((int64_t)1) << (s - 1)) - 1) + ((v >> s) & 1)) >> s;
}

/* v rounded to 24 significant bits, ties to even: what binary32 keeps of an integer
 * (|v| < 2^62). Exact below 2^24; the sign is set aside, as that rounding is symmetric. */
static inline int64_t eb_round24(int64_t v)
{
    const uint64_t magnitude = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
    const int32_t extra = eb_bit_length(magnitude) - 24;
    uint64_t rounded;
    if (extra <= 0) {
        return v;
    }
    rounded = (uint64_t)eb_round_shift((int64_t)magnitude, extra) << extra;
    return v < 0 ? -(int64_t)rounded : (int64_t)rounded;
}

/* ONNX Runtime's nearbyint(acc * S) in binary32, for S = m * 2^-t, exactly, in integers
 * (eq. 1.7, E.2): p = round24(round24(acc) * m), |p| < 2^31 * 2^24 = 2^55 in int64, then
 * p / 2^t rounded half to even. m is the 24-bit significand of S (2^23 <= m < 2^24, or 0)
 * and t = 24 - shift is in [-7, 63]: t <= 0 multiplies by 2^-t (exact, < 2^62), t = 63
 * leaves 0.
 * (Engine: Rescale.apply_reference, eightbit.fixed.requantize_int.) */
static inline int64_t eb_rescale(int64_t acc, int32_t m, int32_t t)
{
    const int64_t p = eb_round24(eb_round24(acc) * (int64_t)m);
    if (t <= 0) {
        return p * (((int64_t)1) << -t);
    }
    return eb_round_shift(p, t);
}

/* (E.13a) eb_rescale for a 16x8 accumulator, |acc| < 2^39 (Prepare proves it): with
 * round24(acc) = s * 2^e, |s| <= 2^24, the product round24(s * m) < 2^48 fits int64, and the
 * result is that times 2^(e - t), rounded half to even. A left shift up to 14 bits stays
 * below 2^62; beyond, a non-zero p (>= 2^23, as m >= 2^23) is past 2^37, outside every
 * stored range, and saturates to +-2^40 (the caller clamps). t = 24 - shift <= 63.
 * (Engine: kernels.requantize.requantize_wide_reference.) */
static inline int64_t eb_rescale_wide(int64_t acc, int32_t m, int32_t t)
{
    const int64_t a = eb_round24(acc);
    const uint64_t magnitude = a < 0 ? (uint64_t)0 - (uint64_t)a : (uint64_t)a;
    int32_t e = eb_bit_length(magnitude) - 24;
    int64_t p;
    if (e < 0) {
        e = 0;
    }
    p = eb_round24((a >> e) * (int64_t)m); /* exact shift: the low e bits of a are 0 */
    t -= e;
    if (t > 0) {
        return eb_round_shift(p, t);
    }
    if (-t > 14) {
        return p == 0 ? 0 : (p < 0 ? -(((int64_t)1) << 40) : (((int64_t)1) << 40));
    }
    return p * (((int64_t)1) << -t);
}

/* clamp(z + rescale_wide(acc), low, high): the output stage of a 16x8 layer (E.13). */
static inline int32_t eb_requantize_wide(int64_t acc, int32_t m, int32_t t, int32_t z,
                                         int32_t low, int32_t high)
{
    const int64_t q = eb_rescale_wide(acc, m, t) + z;
    return (int32_t)(q < low ? low : (q > high ? high : q));
}

/* The output stage of every rescaling layer: clamp(z + rescale(acc), low, high) (eq. E.1). */
static inline int32_t eb_requantize(int64_t acc, int32_t m, int32_t t, int32_t z, int32_t low,
                                    int32_t high)
{
    const int64_t q = eb_rescale(acc, m, t) + z;
    return (int32_t)(q < low ? low : (q > high ? high : q));
}

#endif /* EIGHTBIT_RUNTIME_H */
