/* test-verifier.c - Driver Verifier mode: every check triggered on purpose, with the
 * subcode and parameters of learn.microsoft.com's "Bug Check 0xC4" and "Bug Check 0xDA";
 * leaks at unload; fault injection driving a sample driver through every failure path.
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

#include "ptltest.h"

#define ADAPTER PTLTEST_ADAPTER

typedef ptltest_rig rig;

static rig boot_rig(int verifier, ptl_profile profile)
{
    return ptltest_boot(profile, verifier);
}

/* ---- IRQL rules: one driver routine per check ------------------------------------------ */

typedef struct irql_case {
    const char *name;
    uint32_t subcode;
    KIRQL irql;
    int step; /* which DDI misbehaves */
} irql_case;

static rig *current_rig;

static void irql_body(void *arg)
{
    const irql_case *c = arg;
    rig *r = current_rig;
    PHYSICAL_ADDRESS pa;
    pa.QuadPart = ADAPTER;
    PMDL mdl = IoAllocateMdl((PVOID)(uintptr_t)r->buf, PAGE_SIZE, FALSE, FALSE, NULL);
    PVOID sys = NULL, user = NULL, io = NULL;
    if (c->step != 0)
        MmProbeAndLockPages(mdl, KernelMode, IoReadAccess);
    if (c->step == 6 || c->step == 8)
        sys = MmMapLockedPagesSpecifyCache(mdl, KernelMode, MmCached, NULL, FALSE,
                                           NormalPagePriority);
    if (c->step == 9)
        user =
            MmMapLockedPagesSpecifyCache(mdl, UserMode, MmCached, NULL, FALSE, NormalPagePriority);
    if (c->step == 10)
        io = MmMapIoSpace(pa, PAGE_SIZE, MmNonCached);
    KIRQL old;
    KeRaiseIrql(c->irql, &old);
    switch (c->step) {
    case 0:
        MmProbeAndLockPages(mdl, KernelMode, IoReadAccess);
        break;
    case 1:
        MmMapIoSpace(pa, PAGE_SIZE, MmNonCached);
        break;
    case 2:
        MmMapLockedPages(mdl, KernelMode);
        break;
    case 3:
        MmMapLockedPages(mdl, UserMode);
        break;
    case 4:
        MmMapLockedPagesSpecifyCache(mdl, KernelMode, MmCached, NULL, FALSE, 16);
        break;
    case 5:
        MmMapLockedPagesSpecifyCache(mdl, UserMode, MmCached, NULL, FALSE, 16);
        break;
    case 7:
        MmUnlockPages(mdl);
        break;
    case 8:
        MmUnmapLockedPages(sys, mdl);
        break;
    case 9:
        MmUnmapLockedPages(user, mdl);
        break;
    case 10:
        MmUnmapIoSpace(io, PAGE_SIZE);
        break;
    default:
        break;
    }
    KeLowerIrql(old);
}

static void test_irql_rules(void **state)
{
    (void)state;
    static const irql_case cases[] = {
        {"MmProbeAndLockPages", 0x70, HIGH_LEVEL, 0},
        {"MmMapIoSpace", 0x73, HIGH_LEVEL, 1},
        {"MmMapLockedPages kernel", 0x74, HIGH_LEVEL, 2},
        {"MmMapLockedPages user", 0x75, DISPATCH_LEVEL, 3},
        {"SpecifyCache kernel", 0x76, HIGH_LEVEL, 4},
        {"SpecifyCache user", 0x77, DISPATCH_LEVEL, 5},
        {"MmUnlockPages", 0x78, HIGH_LEVEL, 7},
        {"MmUnmapLockedPages kernel", 0x79, HIGH_LEVEL, 8},
        {"MmUnmapLockedPages user", 0x7A, DISPATCH_LEVEL, 9},
        {"MmUnmapIoSpace", 0x7B, DISPATCH_LEVEL, 10},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        rig r = boot_rig(1, PTL_WIN2000);
        current_rig = &r;
        uint32_t code = ptl_call(r.m, r.app, r.drv, irql_body, (void *)&cases[i], &r.stop);
        if (code != 0xC4 || r.stop.param[0] != cases[i].subcode ||
            r.stop.param[1] != cases[i].irql) {
            fprintf(stderr, "%s: got 0x%x (0x%llx, 0x%llx)\n", cases[i].name, code,
                    (unsigned long long)r.stop.param[0], (unsigned long long)r.stop.param[1]);
            fail();
        }
        ptl_shutdown(r.m);
        /* the same code without the verifier does not stop */
        r = boot_rig(0, PTL_WIN2000);
        current_rig = &r;
        code = ptl_call(r.m, r.app, r.drv, irql_body, (void *)&cases[i], &r.stop);
        assert_true(code != 0xC4);
        ptl_shutdown(r.m);
    }
}

/* ---- MDL misuse ---------------------------------------------------------------------- */

typedef struct misuse {
    int what;
    PVOID a, b;
} misuse;

static void misuse_body(void *arg)
{
    misuse *x = arg;
    rig *r = current_rig;
    PHYSICAL_ADDRESS pa;
    PMDL mdl = IoAllocateMdl((PVOID)(uintptr_t)r->buf, 2 * PAGE_SIZE, FALSE, FALSE, NULL);
    PMDL other = IoAllocateMdl((PVOID)(uintptr_t)r->buf, 2 * PAGE_SIZE, FALSE, FALSE, NULL);
    switch (x->what) {
    case 0x83: /* RAM mapped with MmMapIoSpace without being locked */
        pa.QuadPart = 0x100000;
        MmMapIoSpace(pa, PAGE_SIZE, MmCached);
        break;
    case 0x85: /* an MDL never locked */
        MmMapLockedPages(mdl, KernelMode);
        break;
    case 0xB0: /* locked twice */
        MmProbeAndLockPages(mdl, KernelMode, IoReadAccess);
        MmProbeAndLockPages(mdl, KernelMode, IoReadAccess);
        break;
    case 0xB2: /* mapped to system space twice */
        MmProbeAndLockPages(mdl, KernelMode, IoReadAccess);
        MmMapLockedPagesSpecifyCache(mdl, KernelMode, MmCached, NULL, FALSE, 16);
        MmMapLockedPagesSpecifyCache(mdl, KernelMode, MmCached, NULL, FALSE, 16);
        break;
    case 0x7C: /* unlock of pages never locked */
        MmUnlockPages(mdl);
        break;
    case 0x7D: { /* unlock of an MDL built for nonpaged pool: nothing was locked */
        PVOID block = ExAllocatePoolWithTag(NonPagedPool, PAGE_SIZE, 'ldmN');
        PMDL pool_mdl = IoAllocateMdl(block, PAGE_SIZE, FALSE, FALSE, NULL);
        MmBuildMdlForNonPagedPool(pool_mdl);
        MmUnlockPages(pool_mdl);
        break;
    }
    case 0x01: /* unmap with an MDL that is not mapped, at another MDL's mapping */
        MmProbeAndLockPages(mdl, KernelMode, IoReadAccess);
        MmProbeAndLockPages(other, KernelMode, IoReadAccess);
        x->a = MmMapLockedPagesSpecifyCache(other, KernelMode, MmCached, NULL, FALSE, 16);
        MmUnmapLockedPages(x->a, mdl);
        break;
    case 0x02: /* the MDL changed size after it was mapped */
        MmProbeAndLockPages(mdl, KernelMode, IoReadAccess);
        x->a = MmMapLockedPagesSpecifyCache(mdl, KernelMode, MmCached, NULL, FALSE, 16);
        mdl->ByteCount = PAGE_SIZE;
        MmUnmapLockedPages(x->a, mdl);
        break;
    case 0x03: /* unmapped at the wrong address */
        MmProbeAndLockPages(mdl, KernelMode, IoReadAccess);
        x->a = MmMapLockedPagesSpecifyCache(mdl, KernelMode, MmCached, NULL, FALSE, 16);
        MmUnmapLockedPages((PVOID)((uintptr_t)x->a + PAGE_SIZE), mdl);
        break;
    case 0x400: /* MmUnmapIoSpace of an address MmMapIoSpace never returned */
        MmUnmapIoSpace((PVOID)(uintptr_t)0xF9000000u, PAGE_SIZE);
        break;
    }
}

static void expect_stop(int what, uint32_t code, uint32_t p1)
{
    rig r = boot_rig(1, PTL_WIN2000);
    current_rig = &r;
    misuse x = {what, NULL, NULL};
    uint32_t got = ptl_call(r.m, r.app, r.drv, misuse_body, &x, &r.stop);
    if (got != code || r.stop.param[0] != p1) {
        fprintf(stderr, "case 0x%x: got 0x%x (0x%llx)\n", what, got,
                (unsigned long long)r.stop.param[0]);
        fail();
    }
    if (what == 0x02) {
        assert_int_equal(r.stop.param[2], 2); /* the mapping's pages */
        assert_int_equal(r.stop.param[3], 1); /* the MDL's pages now */
    }
    if (what == 0x03) {
        assert_int_equal(r.stop.param[2], (uint32_t)(uintptr_t)x.a);
        assert_int_equal(r.stop.param[3], (uint32_t)(uintptr_t)x.a + PAGE_SIZE);
    }
    if (what == 0x400) {
        assert_int_equal(r.stop.param[1], 0xF9000000u);
        assert_int_equal(r.stop.param[2], 1);
    }
    ptl_shutdown(r.m);
}

static void test_mdl_and_pte_misuse(void **state)
{
    (void)state;
    expect_stop(0x83, 0xC4, 0x83);
    expect_stop(0x85, 0xC4, 0x85);
    expect_stop(0xB0, 0xC4, 0xB0);
    expect_stop(0xB2, 0xC4, 0xB2);
    expect_stop(0x7C, 0xC4, 0x7C);
    expect_stop(0x7D, 0xC4, 0x7D);
    expect_stop(0x01, 0xDA, 0x01);
    expect_stop(0x02, 0xDA, 0x02);
    expect_stop(0x03, 0xDA, 0x03);
    expect_stop(0x400, 0xDA, 0x400);
}

/* ---- leaks at unload ------------------------------------------------------------------ */

static void leaky(void *arg)
{
    (void)arg;
    rig *r = current_rig;
    PHYSICAL_ADDRESS pa;
    pa.QuadPart = ADAPTER;
    MmMapIoSpace(pa, 3 * PAGE_SIZE, MmNonCached);
    MmAllocateNonCachedMemory(PAGE_SIZE);
    IoAllocateMdl((PVOID)(uintptr_t)r->buf, PAGE_SIZE, FALSE, FALSE, NULL);
    ExAllocatePoolWithTag(NonPagedPool, 100, 'kaeL');          /* Pool Tracking's leak */
    ExFreePool(ExAllocatePoolWithTag(PagedPool, 100, 'kaeL')); /* freed: no leak */
}

/* Locks a page of the application's buffer and frees the MDL without unlocking it. */
static void lock_and_forget(void *arg)
{
    (void)arg;
    rig *r = current_rig;
    PMDL mdl = IoAllocateMdl((PVOID)(uintptr_t)r->buf, PAGE_SIZE, FALSE, FALSE, NULL);
    MmProbeAndLockPages(mdl, UserMode, IoReadAccess);
    IoFreeMdl(mdl);
}

/* Run fn as the rig's driver, unload it, and expect STOP 0xC4 0x62 for `leaks` resources. */
static void expect_leaks(rig *r, void (*fn)(void *), uint32_t leaks)
{
    current_rig = r;
    assert_int_equal(ptl_call(r->m, r->app, r->drv, fn, NULL, &r->stop), 0);
    assert_int_equal(ptl_driver_unload(r->drv, &r->stop), 0xC4);
    assert_int_equal(r->stop.param[0], 0x62);
    assert_int_equal(r->stop.param[1], ptl_driver_base(r->drv) + 0x100);
    assert_int_equal(r->stop.param[3], leaks);
}

/* Pages left locked behind a freed MDL are the driver's leak at unload (an audit found
 * them reported only when the process exited, as 0x76). */
static void test_locked_pages_leak_at_unload(void **state)
{
    (void)state;
    rig r = boot_rig(1, PTL_NT4_SP4);
    expect_leaks(&r, lock_and_forget, 1);
    int seen = 0;
    for (size_t i = 0; i < ptl_event_count(r.m); i++) {
        ptl_event ev;
        assert_int_equal(ptl_event_get(r.m, i, &ev), 0);
        seen |= strstr(ev.text, "1 pages of app.exe still locked") != NULL &&
                strstr(ev.text, "IoAllocateMdl called from") != NULL;
    }
    assert_true(seen);
    ptl_shutdown(r.m);
}

static void test_leaks_at_unload(void **state)
{
    (void)state;
    rig r = boot_rig(1, PTL_NT4_SP4);
    expect_leaks(&r, leaky, 4);
    /* each leak names its call site: the DDI, the address in the driver that called it
     * (inside leaky), the tick */
    static const char *const ddis[] = {"MmMapIoSpace called from", "IoAllocateMdl called from",
                                       "ExAllocatePoolWithTag called from"};
    for (size_t k = 0; k < sizeof ddis / sizeof ddis[0]; k++) {
        int seen = 0;
        for (size_t i = 0; i < ptl_event_count(r.m); i++) {
            ptl_event ev;
            assert_int_equal(ptl_event_get(r.m, i, &ev), 0);
            const char *at = strstr(ev.text, ddis[k]);
            if (!strstr(ev.text, "leak at unload") || !at)
                continue;
            void *caller = NULL;
            assert_int_equal(sscanf(at + strlen(ddis[k]), " %p", &caller), 1);
            /* a return address inside leaky: after its start, within a few KB */
            assert_true((uintptr_t)caller > (uintptr_t)leaky &&
                        (uintptr_t)caller < (uintptr_t)leaky + 4096);
            assert_non_null(strstr(at, "at tick"));
            seen = 1;
        }
        if (!seen)
            fail_msg("no leak report names '%s'", ddis[k]);
    }
    ptl_shutdown(r.m);
    /* without the verifier: reported, and the runs show as leaked */
    r = boot_rig(0, PTL_NT4_SP4);
    current_rig = &r;
    assert_int_equal(ptl_call(r.m, r.app, r.drv, leaky, NULL, &r.stop), 0);
    uint64_t misuse0 = ptl_event_count_type(r.m, "misuse");
    assert_int_equal(ptl_driver_unload(r.drv, &r.stop), 0);
    assert_int_equal(ptl_event_count_type(r.m, "misuse"), misuse0 + 4);
    uint32_t n = ptl_syspte_snapshot(r.m, NULL, NULL, 0);
    uint8_t *uses = malloc(n);
    ptl_syspte_snapshot(r.m, uses, NULL, n);
    uint32_t leaked = 0;
    for (uint32_t i = 0; i < n; i++)
        leaked += uses[i] == PTL_PTE_LEAKED;
    assert_int_equal(leaked, 3 + 2); /* the I/O mapping and the noncached page + its size PTE */
    free(uses);
    assert_int_equal(ptl_check(r.m), 0);
    ptl_shutdown(r.m);
}

/* ---- fault injection ------------------------------------------------------------------ */

typedef struct sample_result {
    int completed;
    int failures_seen;
} sample_result;

/* A well-written driver: allocates its device extension from nonpaged pool, maps a
 * register window, builds an MDL for it and maps it into the application; on any failure
 * it unwinds what it had and returns. */
static void sample_driver(void *arg)
{
    sample_result *res = arg;
    PVOID ext = ExAllocatePoolWithTag(NonPagedPool, 256, 'txeS');
    if (!ext) {
        res->failures_seen++;
        return;
    }
    PHYSICAL_ADDRESS pa;
    pa.QuadPart = ADAPTER;
    PVOID regs = MmMapIoSpace(pa, 2 * PAGE_SIZE, MmNonCached);
    if (!regs) {
        res->failures_seen++;
        ExFreePoolWithTag(ext, 'txeS');
        return;
    }
    PVOID dma = MmAllocateNonCachedMemory(PAGE_SIZE);
    if (!dma) {
        res->failures_seen++;
        MmUnmapIoSpace(regs, 2 * PAGE_SIZE);
        ExFreePoolWithTag(ext, 'txeS');
        return;
    }
    PMDL mdl = IoAllocateMdl(regs, 2 * PAGE_SIZE, FALSE, FALSE, NULL);
    if (!mdl) {
        res->failures_seen++;
        MmFreeNonCachedMemory(dma, PAGE_SIZE);
        MmUnmapIoSpace(regs, 2 * PAGE_SIZE);
        ExFreePoolWithTag(ext, 'txeS');
        return;
    }
    MmBuildMdlForNonPagedPool(mdl);
    PVOID user = NULL;
    NTSTATUS st = STATUS_SUCCESS;
    PTL_TRY
    {
        user = MmMapLockedPagesSpecifyCache(mdl, UserMode, MmNonCached, NULL, FALSE, 16);
    }
    PTL_EXCEPT(EXCEPTION_EXECUTE_HANDLER)
    {
        st = GetExceptionCode();
    }
    if (NT_SUCCESS(st) && user)
        MmUnmapLockedPages(user, mdl);
    else
        res->failures_seen++;
    IoFreeMdl(mdl);
    MmFreeNonCachedMemory(dma, PAGE_SIZE);
    MmUnmapIoSpace(regs, 2 * PAGE_SIZE);
    ExFreePoolWithTag(ext, 'txeS');
    res->completed = 1;
}

static void test_fault_injection_every_path(void **state)
{
    (void)state;
    int clean_run = 0, runs = 0;
    for (uint32_t nth = 1; nth <= 8 && !clean_run; nth++, runs++) {
        ptl_config cfg;
        ptl_config_init(&cfg);
        cfg.fault_inject_kinds = PTL_FAULT_SYSPTES | PTL_FAULT_POOL | PTL_FAULT_MDL;
        cfg.fault_inject_nth = nth;
        ptl_machine *m = ptl_boot(&cfg);
        assert_non_null(m);
        assert_int_equal(ptl_adapter_add(m, PCIBus, 0, ADAPTER, 1u << 20), 0);
        ptl_process *p = ptl_process_create(m, "app.exe");
        uint32_t free0 = ptl_free_system_ptes(m);
        sample_result res = {0, 0};
        ptl_stop stop;
        assert_int_equal(ptl_call(m, p, NULL, sample_driver, &res, &stop), 0);
        /* whatever failed, nothing leaked */
        assert_int_equal(ptl_free_system_ptes(m), free0);
        ptl_counters c;
        ptl_counters_get(m, &c);
        assert_int_equal(c.pool_nonpaged_bytes, 0);
        assert_int_equal(ptl_check(m), 0);
        printf("fault injection at allocation %u: %s\n", nth,
               res.failures_seen ? "the driver saw a failure and unwound" : "no failure left");
        clean_run = res.failures_seen == 0;
        if (!clean_run)
            assert_int_equal(res.failures_seen, 1);
        ptl_shutdown(m);
    }
    /* allocations: the pool block, the I/O mapping, the noncached memory, the MDL; the
     * user mapping takes no system PTEs; so the fifth run is the first without a failure */
    assert_true(clean_run);
    assert_int_equal(runs, 5);
}

static void test_fault_injection_random_is_seeded(void **state)
{
    (void)state;
    uint64_t injected[2];
    for (int k = 0; k < 2; k++) {
        ptl_config cfg;
        ptl_config_init(&cfg);
        cfg.fault_inject_kinds = PTL_FAULT_SYSPTES;
        cfg.fault_inject_ppm = 250000; /* one in four */
        cfg.seed = 42;
        ptl_machine *m = ptl_boot(&cfg);
        uint32_t created = 0;
        for (int i = 0; i < 200; i++) {
            ptl_thread *t = ptl_thread_create(m, NULL);
            created += t != NULL;
        }
        injected[k] = created;
        assert_true(created > 100 && created < 200);
        ptl_shutdown(m);
    }
    assert_int_equal(injected[0], injected[1]); /* same seed, same failures */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_irql_rules),
        cmocka_unit_test(test_mdl_and_pte_misuse),
        cmocka_unit_test(test_leaks_at_unload),
        cmocka_unit_test(test_locked_pages_leak_at_unload),
        cmocka_unit_test(test_fault_injection_every_path),
        cmocka_unit_test(test_fault_injection_random_is_seeded),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
