/* test-pool.c - the pools (ExAllocatePool*), MustSucceed, bad frees, and the period
 * driver's own spelling of exception handling and process identity (__try/__except,
 * ProbeForRead, PsInitialSystemProcess, EPROCESS.Pcb.DirectoryTableBase, __readcr3).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <ptelab/ptelab.h>
#include <ptelab/wdm.h>

static ptl_machine *boot(int verifier)
{
    ptl_config cfg;
    ptl_config_init(&cfg);
    cfg.verifier = verifier;
    ptl_machine *m = ptl_boot(&cfg);
    assert_non_null(m);
    return m;
}

typedef struct basic_ctx {
    PVOID np, pg, al, big;
    ULONG header_tag, readback;
    ptl_counters during;
    ptl_machine *m;
} basic_ctx;

static void basic(void *arg)
{
    basic_ctx *c = arg;
    c->np = ExAllocatePoolWithTag(NonPagedPool, 100, 'tseT');
    c->pg = ExAllocatePoolWithTag(PagedPool, 5000, 'gaPT');
    c->al = ExAllocatePoolWithTag(NonPagedPoolCacheAligned, 10, 'nilA');
    c->big = ExAllocatePool(NonPagedPool, 3 * PAGE_SIZE);
    ULONG v = 0x12345678;
    RtlCopyMemory(c->np, &v, sizeof v);
    RtlCopyMemory(&c->readback, c->np, sizeof v);
    RtlCopyMemory(&c->header_tag, (PUCHAR)c->np - 4, 4); /* POOL_HEADER.PoolTag */
    RtlFillMemory(c->pg, 5000, 0xEE); /* both pages of the paged block are backed */
    ptl_counters_get(c->m, &c->during);
    ExFreePoolWithTag(c->np, 'tseT');
    ExFreePoolWithTag(c->pg, 'gaPT');
    ExFreePool(c->al);
    ExFreePool(c->big);
}

static void test_allocate_and_free(void **state)
{
    (void)state;
    ptl_machine *m = boot(0);
    basic_ctx c;
    memset(&c, 0, sizeof c);
    c.m = m;
    ptl_stop stop;
    assert_int_equal(ptl_call(m, NULL, NULL, basic, &c, &stop), 0);
    assert_non_null(c.np);
    assert_non_null(c.pg);
    assert_int_equal(c.readback, 0x12345678);
    assert_int_equal(c.header_tag, 'tseT');
    assert_int_equal((uintptr_t)c.al & 31, 0); /* cache aligned */
    /* nonpaged blocks in the nonpaged region, paged ones in paged pool */
    const ptl_region *r;
    int n = ptl_layout_regions(m, &r);
    for (int i = 0; i < n; i++) {
        if (strcmp(r[i].name, "Paged pool") == 0)
            assert_true((uintptr_t)c.pg >= r[i].start && (uintptr_t)c.pg < r[i].end);
        if (strcmp(r[i].name, "Initial nonpaged pool") == 0)
            assert_true((uintptr_t)c.np >= r[i].start && (uintptr_t)c.np < r[i].end);
    }
    /* 100 bytes + an 8-byte header = 4 units of 32; 10 aligned = 2 units; a request of a
     * page or more gets whole pages with no header (ExAllocatePoolWithTag's remarks):
     * 3 pages = 384 units, paged 5000 bytes = 2 pages = 256 units, each page aligned */
    assert_int_equal(c.during.pool_nonpaged_bytes, (4 + 2 + 384) * 32);
    assert_int_equal(c.during.pool_paged_bytes, 256 * 32);
    assert_int_equal((uintptr_t)c.big & (PAGE_SIZE - 1), 0);
    assert_int_equal((uintptr_t)c.pg & (PAGE_SIZE - 1), 0);
    ptl_counters after;
    ptl_counters_get(m, &after);
    assert_int_equal(after.pool_nonpaged_bytes, 0);
    assert_int_equal(after.pool_paged_bytes, 0);
    assert_int_equal(ptl_check(m), 0);
    ptl_shutdown(m);
}

/* Blocks smaller than a page never cross a page boundary, whatever was allocated before
 * them (ExAllocatePoolWithTag's remarks). */
typedef struct cross_ctx {
    PVOID p[200];
    uint32_t crossing, n;
} cross_ctx;

static void no_crossing(void *arg)
{
    cross_ctx *c = arg;
    for (uint32_t i = 0; i < 200; i++) {
        SIZE_T bytes = 24 + (i * 397) % 2000; /* sizes that do not tile a page */
        PUCHAR p = ExAllocatePoolWithTag(i & 1 ? PagedPool : NonPagedPool, bytes, 'ssrC');
        if (!p)
            continue;
        c->p[c->n++] = p;
        uintptr_t first = (uintptr_t)(p - 8), last = (uintptr_t)(p + bytes - 1);
        c->crossing += (first / PAGE_SIZE) != (last / PAGE_SIZE);
    }
    for (uint32_t i = 0; i < c->n; i++)
        ExFreePool(c->p[i]);
}

static void test_small_blocks_stay_in_a_page(void **state)
{
    (void)state;
    ptl_machine *m = boot(0);
    cross_ctx c;
    memset(&c, 0, sizeof c);
    ptl_stop stop;
    assert_int_equal(ptl_call(m, NULL, NULL, no_crossing, &c, &stop), 0);
    assert_int_equal(c.n, 200);
    assert_int_equal(c.crossing, 0);
    assert_int_equal(ptl_check(m), 0);
    ptl_shutdown(m);
}

typedef struct exhaust_ctx {
    uint32_t count;
    PVOID last;
    int must;
} exhaust_ctx;

static void eat_nonpaged(void *arg)
{
    exhaust_ctx *c = arg;
    PVOID p;
    while ((p = ExAllocatePoolWithTag(c->must ? NonPagedPoolMustSucceed : NonPagedPool,
                                      PAGE_SIZE - 8, 'taE ')))
        c->last = p, c->count++;
}

static void test_expansion_then_failure(void **state)
{
    (void)state;
    ptl_machine *m = boot(0);
    exhaust_ctx c = {0, NULL, 0};
    ptl_stop stop;
    assert_int_equal(ptl_call(m, NULL, NULL, eat_nonpaged, &c, &stop), 0);
    /* the initial pool first, then every nonpaged-pool-expansion page */
    const ptl_region *r;
    int n = ptl_layout_regions(m, &r);
    uint32_t exp_start = 0, exp_end = 0;
    for (int i = 0; i < n; i++)
        if (strcmp(r[i].name, "Nonpaged pool expansion") == 0)
            exp_start = r[i].start, exp_end = r[i].end;
    assert_true((uintptr_t)c.last >= exp_start && (uintptr_t)c.last < exp_end);
    printf("nonpaged pool took %u page-sized blocks before ExAllocatePool returned NULL\n",
           c.count);
    assert_true(c.count > 5000);
    assert_true(ptl_event_count_type(m, "fail") >= 1);
    /* the system PTE pool proper was not touched: expansion has its own PTEs */
    assert_int_equal(ptl_free_system_ptes(m), ptl_total_system_ptes(m));
    assert_int_equal(ptl_check(m), 0);
    ptl_shutdown(m);
}

static void test_must_succeed_stop(void **state)
{
    (void)state;
    ptl_machine *m = boot(0);
    exhaust_ctx c = {0, NULL, 1};
    ptl_stop stop;
    assert_int_equal(ptl_call(m, NULL, NULL, eat_nonpaged, &c, &stop), 0x41);
    assert_string_equal(stop.name, "MUST_SUCCEED_POOL_EMPTY");
    assert_int_equal(stop.param[0], PAGE_SIZE - 8);
    assert_int_equal(c.count, 4); /* 4 pages of must-succeed pool: 4 page-sized blocks */
    ptl_counters now;
    ptl_counters_get(m, &now);
    assert_int_equal(stop.param[3], now.available_bytes / PAGE_SIZE); /* P4: available pages */
    ptl_shutdown(m);
}

static void double_free(void *arg)
{
    int *which = arg;
    PVOID p = ExAllocatePoolWithTag(NonPagedPool, 64, 'eerF');
    ExFreePool(p);
    if (*which == 0)
        ExFreePool(p);
    else
        ExFreePool((PUCHAR)p + 32);
}

static void test_bad_frees(void **state)
{
    (void)state;
    for (int which = 0; which < 2; which++) {
        ptl_machine *m = boot(0);
        ptl_stop stop;
        assert_int_equal(ptl_call(m, NULL, NULL, double_free, &which, &stop), 0xC2);
        assert_int_equal(stop.param[0], which ? 0x42 : 0x07);
        ptl_shutdown(m);
    }
}

static void zero_bytes(void *arg)
{
    (void)arg;
    ExAllocatePool(PagedPool, 0);
}

static void test_verifier_zero_byte_allocation(void **state)
{
    (void)state;
    ptl_machine *m = boot(1);
    ptl_stop stop;
    assert_int_equal(ptl_call(m, NULL, NULL, zero_bytes, NULL, &stop), 0xC4);
    assert_int_equal(stop.param[0], 0x00);
    ptl_shutdown(m);
}

/* Paged pool above APC_LEVEL (0x01), nonpaged pool above DISPATCH_LEVEL (0x02): the IRQL
 * rules of the allocators, with the IRQL, the pool type and the size as parameters. */
typedef struct irql_alloc {
    KIRQL irql;
    POOL_TYPE type;
} irql_alloc;

static void alloc_at_irql(void *arg)
{
    irql_alloc *a = arg;
    KIRQL old;
    KeRaiseIrql(a->irql, &old);
    ExAllocatePool(a->type, 40);
    KeLowerIrql(old);
}

static void test_verifier_pool_irql(void **state)
{
    (void)state;
    static const struct {
        KIRQL irql;
        POOL_TYPE type;
        uint32_t code, sub;
    } cases[] = {
        {DISPATCH_LEVEL, PagedPool, 0xC4, 0x01},
        {DISPATCH_LEVEL, NonPagedPool, 0, 0}, /* allowed */
        {HIGH_LEVEL, NonPagedPool, 0xC4, 0x02},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        ptl_machine *m = boot(1);
        irql_alloc a = {cases[i].irql, cases[i].type};
        ptl_stop stop;
        assert_int_equal(ptl_call(m, NULL, NULL, alloc_at_irql, &a, &stop), cases[i].code);
        if (cases[i].code) {
            assert_int_equal(stop.param[0], cases[i].sub);
            assert_int_equal(stop.param[1], cases[i].irql);
            assert_int_equal(stop.param[2], cases[i].type);
            assert_int_equal(stop.param[3], 40);
        }
        ptl_shutdown(m);
    }
}

/* ---- period code: __try/__except, probes, identity ---------------------------------------- */

typedef struct period_ctx {
    NTSTATUS st1, st2, st3;
    PEPROCESS initial, current;
    HANDLE pid;
    unsigned long cr3;
    ULONG dirbase;
    uint32_t user_buf;
} period_ctx;

static void period_driver(void *arg)
{
    period_ctx *c = arg;
    __try {
        ProbeForRead((PVOID)0x80001000, 4, 4); /* a system address from "user" */
        c->st1 = STATUS_SUCCESS;
    } __except (EXCEPTION_EXECUTE_HANDLER) {
        c->st1 = GetExceptionCode();
    }
    __try {
        ProbeForWrite((PVOID)(uintptr_t)(c->user_buf + 2), 4, 4);
        c->st2 = STATUS_SUCCESS;
    } __except (EXCEPTION_EXECUTE_HANDLER) {
        c->st2 = GetExceptionCode();
    }
    __try {
        ProbeForWrite((PVOID)(uintptr_t)c->user_buf, 8, 4);
        c->st3 = STATUS_SUCCESS;
    } __except (EXCEPTION_EXECUTE_HANDLER) {
        c->st3 = GetExceptionCode();
    }
    c->initial = PsInitialSystemProcess;
    c->current = PsGetCurrentProcess();
    c->pid = PsGetCurrentProcessId();
    c->cr3 = __readcr3();
    c->dirbase = c->current->Pcb.DirectoryTableBase[0];
}

static void test_period_driver_code(void **state)
{
    (void)state;
    ptl_machine *m = boot(0);
    ptl_process *p = ptl_process_create(m, "app.exe");
    period_ctx c;
    memset(&c, 0, sizeof c);
    c.user_buf = ptl_user_alloc(p, 4096);
    ptl_stop stop;
    assert_int_equal(ptl_call(m, p, NULL, period_driver, &c, &stop), 0);
    assert_int_equal(c.st1, STATUS_ACCESS_VIOLATION);
    assert_int_equal(c.st2, STATUS_DATATYPE_MISALIGNMENT);
    assert_int_equal(c.st3, STATUS_SUCCESS);
    assert_ptr_equal(c.initial, ptl_process_eprocess(ptl_system_process(m)));
    assert_ptr_equal(c.current, ptl_process_eprocess(p));
    assert_int_equal((uintptr_t)c.pid, ptl_process_id(p));
    assert_int_equal(c.cr3, ptl_process_dirbase(p));
    assert_int_equal(c.dirbase, ptl_process_dirbase(p));
    assert_memory_equal(c.current->ImageFileName, "app.exe", 8);
    ptl_shutdown(m);
}

/* kd's view of the pools (learn.microsoft.com "!poolused", "!pool"). */
static PVOID kd_block;
static void kd_alloc(void *arg)
{
    (void)arg;
    kd_block = ExAllocatePoolWithTag(NonPagedPool, 100, 'tseT');
}

static void test_kd_pool_commands(void **state)
{
    (void)state;
    ptl_machine *m = boot(0);
    ptl_stop stop;
    assert_int_equal(ptl_call(m, NULL, NULL, kd_alloc, NULL, &stop), 0);
    char *out = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&out, &len);
    assert_int_equal(ptl_kd(m, "!poolused", f), 0);
    char cmd[64];
    snprintf(cmd, sizeof cmd, "!pool %x", (unsigned)(uintptr_t)kd_block + 20);
    assert_int_equal(ptl_kd(m, cmd, f), 0);
    assert_true(ptl_kd(m, "!pool 0", f) != 0);
    fclose(f);
    assert_non_null(strstr(out, " Test        1         0       128"));
    assert_non_null(strstr(out, "region is Nonpaged pool"));
    assert_non_null(strstr(out, "(Allocated) *Test"));
    assert_non_null(strstr(out, "kd: 00000000 is not in any pool"));
    free(out);
    ptl_shutdown(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_allocate_and_free),
        cmocka_unit_test(test_small_blocks_stay_in_a_page),
        cmocka_unit_test(test_expansion_then_failure),
        cmocka_unit_test(test_must_succeed_stop),
        cmocka_unit_test(test_bad_frees),
        cmocka_unit_test(test_verifier_zero_byte_allocation),
        cmocka_unit_test(test_verifier_pool_irql),
        cmocka_unit_test(test_period_driver_code),
        cmocka_unit_test(test_kd_pool_commands),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
