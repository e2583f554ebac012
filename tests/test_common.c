/* test_common.c: proves the common layer: error names, checked size arithmetic and the ggml
 * type table (block sizes as ggml defines them). */
#include "common/fd.h"
#include "common/ggtypes.h"
#include "tests/testutil.h"

START_TEST(test_strerror)
{
    ck_assert_str_eq(fd_strerror(0), "success");
    ck_assert_str_eq(fd_strerror(FD_ETRUNC), "truncated data");
    ck_assert_str_eq(fd_strerror(-ENOMEM), strerror(ENOMEM));
    ck_assert_str_eq(fd_strerror(-99999), "unknown error");
}
END_TEST

START_TEST(test_sizes)
{
    size_t out = 0;
    ck_assert_int_eq(fd_mul_size(1u << 20, 1u << 10, &out), 0);
    ck_assert_uint_eq(out, (size_t)1 << 30);
    ck_assert_int_eq(fd_mul_size(SIZE_MAX / 2 + 1, 2, &out), FD_ERANGE);
    ck_assert_int_eq(fd_add_size(SIZE_MAX, 1, &out), FD_ERANGE);
}
END_TEST

START_TEST(test_types)
{
    /* bytes per block of 256 (K-quants) or 32 elements, from ggml's block structs */
    ck_assert_int_eq(gg_block_bytes(GG_Q4_K), 144);
    ck_assert_int_eq(gg_block_bytes(GG_Q6_K), 210);
    ck_assert_int_eq(gg_block_bytes(GG_Q8_0), 34);
    ck_assert_int_eq(gg_block_bytes(GG_Q4_0), 18);
    ck_assert_int_eq(gg_block_bytes(GG_Q2_K), 84);
    ck_assert_int_eq(gg_block_bytes(GG_Q3_K), 110);
    ck_assert_int_eq(gg_block_bytes(GG_Q5_K), 176);
    ck_assert_int_eq(gg_block_bytes(GG_Q8_K), 292);
    ck_assert_int_eq(gg_block_elems(GG_Q4_K), 256);
    ck_assert_int_eq(gg_block_elems(GG_BF16), 1);
    ck_assert_uint_eq(gg_row_bytes(GG_Q8_0, 64), 68);
    ck_assert_uint_eq(gg_row_bytes(GG_Q8_0, 33), 0);
    ck_assert_uint_eq(gg_row_bytes(GG_F32, 5), 20);
    ck_assert(!gg_type_known(4));
    ck_assert(!gg_type_known(-1));
    ck_assert(!gg_type_known(1000));
    ck_assert_int_eq(gg_type_from_name("q6_k"), GG_Q6_K);
    ck_assert_int_eq(gg_type_from_name("nope"), -1);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("common");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_strerror);
    tcase_add_test(tc, test_sizes);
    tcase_add_test(tc, test_types);
    suite_add_tcase(s, tc);
    return tu_run(s);
}
