/* cblas.h (bench/cuda/compat-blas): the two OpenBLAS entry points the CPU backend calls, for
 * building on the GPU machine, whose image has no OpenBLAS development files
 * (bench/cuda/cuda-all.sh uses this folder only when <cblas.h> or -lopenblas is missing).
 * cblas_lite.c is a plain loop: correct, slow, and only reached by CPU products of 32 rows or
 * more (the tests there run the CPU backend with blas_rows=0). */
#ifndef FD_COMPAT_CBLAS_H
#define FD_COMPAT_CBLAS_H

enum CBLAS_ORDER { CblasRowMajor = 101, CblasColMajor = 102 };
enum CBLAS_TRANSPOSE { CblasNoTrans = 111, CblasTrans = 112 };

void cblas_sgemm(enum CBLAS_ORDER order, enum CBLAS_TRANSPOSE ta, enum CBLAS_TRANSPOSE tb, int m,
                 int n, int k, float alpha, const float *a, int lda, const float *b, int ldb,
                 float beta, float *c, int ldc);
void openblas_set_num_threads(int n);

#endif
