/* The composer's fused pass for 16-bit task vectors on the CPU (see search/vectors/fused.py):
 *
 *     out[i] = theta[i] + sum_j coefs[j] * widen(stack[rows[j] * ld + i])   for start <= i < stop
 *
 * with widen() bf16 -> fp32 (a shift) or fp16 -> fp32 (F16C). Each vector element is read once and widened
 * in registers; the sum stays in fp32 registers across the rows, and each output is written once.
 */
#include <stdint.h>
#include <string.h>
#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#include <immintrin.h>
#define TV_SIMD 1
#endif

static inline float bf16_to_f32(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static inline float f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, man = h & 0x3ff, u;
    if (exp == 0x1f) {
        u = sign | 0x7f800000u | (man << 13);
    } else if (exp != 0) {
        u = sign | ((exp + 112) << 23) | (man << 13);
    } else if (man == 0) {
        u = sign;
    } else { /* subnormal: normalise the mantissa */
        exp = 113;
        while (!(man & 0x400)) {
            man <<= 1;
            exp--;
        }
        u = sign | (exp << 23) | ((man & 0x3ff) << 13);
    }
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static inline float widen1(uint16_t h, int32_t bf16) { return bf16 ? bf16_to_f32(h) : f16_to_f32(h); }

#ifdef TV_SIMD
/* Elements ahead of the current position, per row, for software prefetch: with K rows read side by side the
   hardware prefetcher alone leaves the core waiting on memory. 256 elements = 512 bytes = 8 lines. */
#define PREFETCH 256
static inline __m256 widen8(const uint16_t *p, int32_t bf16) {
    __m128i h = _mm_loadu_si128((const __m128i *)p);
    return bf16 ? _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16)) : _mm256_cvtph_ps(h);
}
#endif

/* 1 when compiled with the AVX2/FMA/F16C path; the scalar path is slower than torch, so the caller uses
   this kernel only where it returns 1. */
int32_t taskvec_fused16_simd(void) {
#ifdef TV_SIMD
    return 1;
#else
    return 0;
#endif
}

void taskvec_fused16(const float *theta, const uint16_t *stack, int64_t ld, const int64_t *rows,
                     const float *coefs, int32_t r, int64_t start, int64_t stop, int32_t bf16, float *out) {
    int64_t i = start;
#ifdef TV_SIMD
    for (; i + 32 <= stop; i += 32) {
        /* four independent accumulators: one FMA chain per 8 lanes would wait on its own latency */
        __m256 a0 = _mm256_loadu_ps(theta + i), a1 = _mm256_loadu_ps(theta + i + 8);
        __m256 a2 = _mm256_loadu_ps(theta + i + 16), a3 = _mm256_loadu_ps(theta + i + 24);
        for (int32_t j = 0; j < r; j++) {
            const uint16_t *p = stack + rows[j] * ld + i;
            __m256 c = _mm256_set1_ps(coefs[j]);
            _mm_prefetch((const char *)(p + PREFETCH), _MM_HINT_T0);
            a0 = _mm256_fmadd_ps(c, widen8(p, bf16), a0);
            a1 = _mm256_fmadd_ps(c, widen8(p + 8, bf16), a1);
            a2 = _mm256_fmadd_ps(c, widen8(p + 16, bf16), a2);
            a3 = _mm256_fmadd_ps(c, widen8(p + 24, bf16), a3);
        }
        _mm256_storeu_ps(out + i, a0);
        _mm256_storeu_ps(out + i + 8, a1);
        _mm256_storeu_ps(out + i + 16, a2);
        _mm256_storeu_ps(out + i + 24, a3);
    }
#endif
    for (; i < stop; i++) {
        float acc = theta[i];
        for (int32_t j = 0; j < r; j++) acc += coefs[j] * widen1(stack[rows[j] * ld + i], bf16);
        out[i] = acc;
    }
}
