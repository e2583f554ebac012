/* cblas_lite.c: C = alpha op(A) op(B) + beta C with plain loops (see cblas.h beside it). */
#include "cblas.h"

void cblas_sgemm(enum CBLAS_ORDER order, enum CBLAS_TRANSPOSE ta, enum CBLAS_TRANSPOSE tb, int m,
                 int n, int k, float alpha, const float *a, int lda, const float *b, int ldb,
                 float beta, float *c, int ldc)
{
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++) {
            double s = 0;
            for (int p = 0; p < k; p++) {
                /* row-major element (r, q) of a matrix with leading dimension ld: r*ld + q */
                float av, bv;
                if (order == CblasRowMajor) {
                    av = ta == CblasNoTrans ? a[(long)i * lda + p] : a[(long)p * lda + i];
                    bv = tb == CblasNoTrans ? b[(long)p * ldb + j] : b[(long)j * ldb + p];
                } else {
                    av = ta == CblasNoTrans ? a[(long)p * lda + i] : a[(long)i * lda + p];
                    bv = tb == CblasNoTrans ? b[(long)j * ldb + p] : b[(long)p * ldb + j];
                }
                s += (double)av * bv;
            }
            float *cc = order == CblasRowMajor ? &c[(long)i * ldc + j] : &c[(long)j * ldc + i];
            *cc = alpha * (float)s + (beta != 0.f ? beta * *cc : 0.f);
        }
}

void openblas_set_num_threads(int n)
{
    (void)n;
}
