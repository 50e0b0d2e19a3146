/* eightbit_runtime.h: the integer arithmetic shared by every layer eightbit generates.
 *
 * The rules are the integer engine's (docs/numerics.md §E.2, docs/numerics-codegen.md):
 * int32 accumulators, int64 products inside the requantization, one rounding, ties to
 * even. Integers only, no division, no allocation. Every function is static inline: the
 * compiler inlines it into the layer loops, and a program may include this file from
 * several generated models.
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

/* round_half_even(acc * m / 2^t), exactly: p = acc * m is formed in int64 (|acc| < 2^31,
 * 0 <= m < 2^31, so |p| < 2^62) and adding 2^(t-1) - 1 carries into the quotient when the
 * remainder is above one half; at exactly one half the quotient's parity bit decides.
 * t = 31 - shift is in [0, 63]; t = 0 leaves p. (Engine: Rescale.apply, eq. E.2.) */
static inline int64_t eb_rescale(int64_t acc, int32_t m, int32_t t)
{
    const int64_t p = acc * (int64_t)m;
    if (t == 0) {
        return p;
    }
    return (p + ((((int64_t)1) << (t - 1)) - 1) + ((p >> t) & 1)) >> t;
}

/* round_half_even(v / 2^s) for s >= 1: the same rounding without a multiplier (Resize). */
static inline int64_t eb_round_shift(int64_t v, int32_t s)
{
    return (v + ((((int64_t)1) << (s - 1)) - 1) + ((v >> s) & 1)) >> s;
}

/* The output stage of every rescaling layer: clamp(z + rescale(acc), low, high) (eq. E.1). */
static inline int32_t eb_requantize(int64_t acc, int32_t m, int32_t t, int32_t z, int32_t low,
                                    int32_t high)
{
    const int64_t q = eb_rescale(acc, m, t) + z;
    return (int32_t)(q < low ? low : (q > high ? high : q));
}

#endif /* EIGHTBIT_RUNTIME_H */
