/* test-mapping-failures.c - every failure mode of the two mapping methods, triggered on
 * purpose, with the outcome and parameters NT documents (or ptelab's diagnostic where NT
 * would only corrupt memory). Sources per case are in src/mdl.c, src/object.c,
 * src/iospace.c and docs/fidelity.md.
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
#define boot_rig       ptltest_boot
#define call           ptltest_call
#define event_mentions ptltest_event_mentions

/* ---- views ---------------------------------------------------------------------------- */

typedef struct view_ctx {
    ULONG protect;
    uint64_t physical;
    NTSTATUS st;
    PVOID base;
    SIZE_T size; /* 0: one page */
} view_ctx;

static void map_view(void *arg)
{
    view_ctx *c = arg;
    SIZE_T size = c->size ? c->size : PAGE_SIZE;
    c->st = ptltest_map_physical(c->physical, &size, c->protect, &c->base);
}

static void dpc_read(void *arg)
{
    ULONG v;
    RtlCopyMemory(&v, arg, sizeof v);
}

static void test_dpc_touches_user_view_in_wrong_context(void **state)
{
    (void)state;
    rig r = boot_rig(PTL_NT4_SP4, 0);
    view_ctx c = {PAGE_READWRITE | PAGE_NOCACHE, ADAPTER, 0, NULL, 0};
    assert_int_equal(call(&r, r.app, map_view, &c), 0);
    assert_int_equal(c.st, STATUS_SUCCESS);
    /* while app is the process that ran last, the DPC reads app's view: it works, and the
     * hazard (a user address from an arbitrary context) is recorded */
    assert_int_equal(ptl_call_dpc(r.m, r.drv, dpc_read, c.base, &r.stop), 0);
    assert_true(event_mentions(r.m, "hazard", "DPC read user address"));
    /* another process runs; the same DPC now meets nothing at that address */
    uint32_t junk;
    assert_int_equal(ptl_user_read(r.other, 0x10000, &junk, 4), STATUS_ACCESS_VIOLATION);
    assert_int_equal(ptl_call_dpc(r.m, r.drv, dpc_read, c.base, &r.stop), 0xD1);
    assert_string_equal(r.stop.name, "DRIVER_IRQL_NOT_LESS_OR_EQUAL");
    assert_int_equal(r.stop.param[0], (uint32_t)(uintptr_t)c.base);
    assert_int_equal(r.stop.param[1], DISPATCH_LEVEL);
    assert_int_equal(r.stop.param[2], 0); /* a read */
    assert_int_equal(r.stop.param[3], ptl_driver_base(r.drv) + 0x1000);
    /* the frozen machine still answers */
    char *out = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&out, &len);
    assert_int_equal(ptl_kd(r.m, "!vm", f), 0);
    fclose(f);
    assert_non_null(strstr(out, "Free System PTEs"));
    free(out);
    assert_int_equal(ptl_call(r.m, r.app, r.drv, dpc_read, c.base, &r.stop), 0xD1);
    ptl_shutdown(r.m);
}

static void conflicting_views(ptl_profile profile, NTSTATUS expect_second)
{
    rig r = boot_rig(profile, 0);
    view_ctx a = {PAGE_READWRITE | PAGE_NOCACHE, ADAPTER + 0x2000, 0, NULL, 0};
    view_ctx b = {PAGE_READWRITE, ADAPTER + 0x2000, 0, NULL, 0};
    assert_int_equal(call(&r, r.app, map_view, &a), 0);
    assert_int_equal(a.st, STATUS_SUCCESS);
    assert_int_equal(call(&r, r.other, map_view, &b), 0);
    assert_int_equal(b.st, expect_second);
    if (expect_second == STATUS_SUCCESS)
        assert_true(event_mentions(r.m, "hazard", "while it is mapped noncached"));
    else
        assert_true(event_mentions(r.m, "fail", "STATUS_CONFLICTING_ADDRESSES"));
    assert_int_equal(ptl_check(r.m), 0);
    ptl_shutdown(r.m);
}

static void test_conflicting_attributes_xp_refuses(void **state)
{
    (void)state;
    conflicting_views(PTL_WINXP, STATUS_CONFLICTING_ADDRESSES);
}

static void test_conflicting_attributes_nt4_maps_and_records(void **state)
{
    (void)state;
    conflicting_views(PTL_NT4_SP4, STATUS_SUCCESS);
    conflicting_views(PTL_WIN2000, STATUS_SUCCESS);
}

typedef struct ram_view {
    uint64_t physical;
    NTSTATUS st;
} ram_view;

static void test_view_of_ram_not_owned_is_a_hazard(void **state)
{
    (void)state;
    rig r = boot_rig(PTL_NT4_SP4, 0);
    /* the app's page directory is RAM the driver does not own */
    view_ctx c = {PAGE_READONLY, (uint64_t)ptl_process_dirbase(r.app), 0, NULL, 0};
    assert_int_equal(call(&r, r.app, map_view, &c), 0);
    assert_int_equal(c.st, STATUS_SUCCESS);
    assert_true(event_mentions(r.m, "hazard", "page directory"));
    /* and the app sees its own page directory: PDE 0x300 maps the directory itself */
    uint32_t pde = 0;
    uint32_t in_view = ptl_process_dirbase(r.app) & 0xFFFF; /* the view starts 64 KB aligned */
    assert_int_equal(
        ptl_user_read(r.app, (uint32_t)(uintptr_t)c.base + in_view + 0x300 * 4, &pde, 4),
        STATUS_SUCCESS);
    assert_int_equal(pde & 0xFFFFF000u, ptl_process_dirbase(r.app));
    ptl_shutdown(r.m);
}

static void test_user_mode_open_of_physical_memory(void **state)
{
    (void)state;
    rig r = boot_rig(PTL_NT4_SP4, 0);
    uint32_t h = 0;
    assert_int_equal(ptl_user_open_section(r.app, "\\Device\\PhysicalMemory", SECTION_MAP_READ, &h),
                     STATUS_ACCESS_DENIED);
    assert_int_equal(h, 0);
    ptl_process_set_privileged(r.app, 1);
    assert_int_equal(ptl_user_open_section(r.app, "\\Device\\PhysicalMemory", SECTION_MAP_READ, &h),
                     STATUS_SUCCESS);
    assert_true(h != 0);
    assert_int_equal(ptl_user_open_section(r.app, "\\Device\\Nothing", SECTION_MAP_READ, &h),
                     STATUS_OBJECT_NAME_NOT_FOUND);
    ptl_shutdown(r.m);
}

/* ---- MmUnmapIoSpace misuse ------------------------------------------------------------- */

typedef struct io_ctx {
    PVOID va;
    SIZE_T map_bytes, unmap_bytes;
    int unmap_twice;
} io_ctx;

static void io_map_unmap(void *arg)
{
    io_ctx *c = arg;
    PHYSICAL_ADDRESS pa;
    pa.QuadPart = ADAPTER;
    c->va = MmMapIoSpace(pa, c->map_bytes, MmNonCached);
    MmUnmapIoSpace(c->va, c->unmap_bytes);
    if (c->unmap_twice)
        MmUnmapIoSpace(c->va, c->unmap_bytes);
}

static void test_double_unmap_io_space(void **state)
{
    (void)state;
    /* XP: SYSTEM_PTE_MISUSE 0x400 with the base and the pages */
    rig r = boot_rig(PTL_WINXP, 0);
    io_ctx c = {NULL, 2 * PAGE_SIZE, 2 * PAGE_SIZE, 1};
    assert_int_equal(call(&r, r.app, io_map_unmap, &c), 0xDA);
    assert_int_equal(r.stop.param[0], 0x400);
    assert_int_equal(r.stop.param[1], (uint32_t)(uintptr_t)c.va);
    assert_int_equal(r.stop.param[2], 2);
    assert_int_equal(r.stop.param[3], 0);
    ptl_shutdown(r.m);
    /* NT 4.0 without the verifier: diagnosed, nothing changes */
    r = boot_rig(PTL_NT4_SP4, 0);
    uint32_t free0 = ptl_free_system_ptes(r.m);
    assert_int_equal(call(&r, r.app, io_map_unmap, &c), 0);
    assert_int_equal(ptl_free_system_ptes(r.m), free0);
    assert_true(event_mentions(r.m, "misuse", "not an I/O-space mapping"));
    assert_int_equal(ptl_check(r.m), 0);
    ptl_shutdown(r.m);
    /* NT 4.0 with the verifier: the STOP */
    r = boot_rig(PTL_NT4_SP4, 1);
    assert_int_equal(call(&r, r.app, io_map_unmap, &c), 0xDA);
    assert_int_equal(r.stop.param[0], 0x400);
    ptl_shutdown(r.m);
}

static void test_unmap_io_space_wrong_size(void **state)
{
    (void)state;
    rig r = boot_rig(PTL_NT4_SP4, 1);
    io_ctx c = {NULL, 3 * PAGE_SIZE, PAGE_SIZE, 0};
    assert_int_equal(call(&r, r.app, io_map_unmap, &c), 0xDA);
    assert_int_equal(r.stop.param[0], 0x305);
    assert_int_equal(r.stop.param[2], 1);
    assert_int_equal(r.stop.param[3], 3);
    ptl_shutdown(r.m);
    r = boot_rig(PTL_NT4_SP4, 0);
    uint32_t free0 = ptl_free_system_ptes(r.m);
    assert_int_equal(call(&r, r.app, io_map_unmap, &c), 0);
    assert_int_equal(ptl_free_system_ptes(r.m), free0 - 3); /* left mapped: a visible leak */
    assert_true(event_mentions(r.m, "misuse", "names 1 pages but the mapping has 3"));
    ptl_shutdown(r.m);
}

/* ---- probe and lock ------------------------------------------------------------------- */

typedef struct lock_ctx {
    uint32_t va, bytes;
    int catch_it, unlock;
    NTSTATUS caught;
    PMDL mdl;
} lock_ctx;

static void probe_and_lock(void *arg)
{
    lock_ctx *c = arg;
    c->mdl = IoAllocateMdl((PVOID)(uintptr_t)c->va, c->bytes, FALSE, FALSE, NULL);
    if (c->catch_it) {
        PTL_TRY
        {
            MmProbeAndLockPages(c->mdl, UserMode, IoWriteAccess);
        }
        PTL_EXCEPT(EXCEPTION_EXECUTE_HANDLER)
        {
            c->caught = GetExceptionCode();
            IoFreeMdl(c->mdl);
            c->mdl = NULL;
            return;
        }
    } else {
        MmProbeAndLockPages(c->mdl, UserMode, IoWriteAccess);
    }
    if (c->unlock) {
        MmUnlockPages(c->mdl);
        IoFreeMdl(c->mdl);
        c->mdl = NULL;
    }
}

static void test_probe_bad_user_buffer(void **state)
{
    (void)state;
    rig r = boot_rig(PTL_NT4_SP4, 0);
    lock_ctx c = {0x00400000, 4096, 1, 1, 0, NULL}; /* nothing is mapped there */
    assert_int_equal(call(&r, r.app, probe_and_lock, &c), 0);
    assert_int_equal(c.caught, STATUS_ACCESS_VIOLATION);
    /* a range reaching into system space */
    c.va = 0x7FFFF000;
    c.caught = 0;
    assert_int_equal(call(&r, r.app, probe_and_lock, &c), 0);
    assert_int_equal(c.caught, STATUS_ACCESS_VIOLATION);
    /* uncaught: KMODE_EXCEPTION_NOT_HANDLED */
    c.va = 0x00400000;
    c.catch_it = 0;
    assert_int_equal(call(&r, r.app, probe_and_lock, &c), 0x1E);
    assert_int_equal(r.stop.param[0], 0xC0000005);
    assert_int_equal(r.stop.param[1], ptl_driver_base(r.drv) + 0x1000);
    assert_int_equal(r.stop.param[3], 0x00400000);
    ptl_shutdown(r.m);
}

static void test_process_exit_with_locked_pages(void **state)
{
    (void)state;
    rig r = boot_rig(PTL_NT4_SP4, 0);
    uint32_t buf = ptl_user_alloc(r.app, 3 * 4096);
    assert_true(buf != 0);
    lock_ctx c = {buf + 100, 2 * 4096, 0, 0, 0, NULL}; /* spans 3 pages */
    assert_int_equal(call(&r, r.app, probe_and_lock, &c), 0);
    assert_non_null(c.mdl);
    assert_int_equal(c.mdl->MdlFlags & (MDL_PAGES_LOCKED | MDL_WRITE_OPERATION),
                     MDL_PAGES_LOCKED | MDL_WRITE_OPERATION);
    assert_ptr_equal(c.mdl->Process, r.app);
    /* the locked pages stay resident through a swap-out */
    assert_int_equal(ptl_process_swap_out(r.app), 0);
    assert_int_equal(ptl_process_exit(r.app, &r.stop), 0x76);
    assert_string_equal(r.stop.name, "PROCESS_HAS_LOCKED_PAGES");
    assert_int_equal(r.stop.param[0], 0);
    assert_int_equal(r.stop.param[2], 3);
    ptl_shutdown(r.m);
    /* unlocked first: the process exits cleanly */
    r = boot_rig(PTL_NT4_SP4, 0);
    buf = ptl_user_alloc(r.app, 3 * 4096);
    lock_ctx d = {buf, 3 * 4096, 0, 1, 0, NULL};
    assert_int_equal(call(&r, r.app, probe_and_lock, &d), 0);
    assert_int_equal(ptl_process_exit(r.app, &r.stop), 0);
    assert_int_equal(ptl_check(r.m), 0);
    ptl_shutdown(r.m);
}

/* ---- MDL mappings and exhaustion -------------------------------------------------------- */

typedef struct exhaust_ctx {
    uint32_t buf;
    int mode; /* 0 MmMapLockedPages, 1 MDL_MAPPING_CAN_FAIL, 2 ...Safe, 3 SpecifyCache FALSE */
    PVOID result;
    int io_maps;
} exhaust_ctx;

static void exhaust_then_map(void *arg)
{
    exhaust_ctx *c = arg;
    PHYSICAL_ADDRESS pa;
    pa.QuadPart = ADAPTER;
    /* eat the pool in 64-page pieces, then in single pages */
    while (MmMapIoSpace(pa, 64 * PAGE_SIZE, MmNonCached))
        c->io_maps++;
    while (MmMapIoSpace(pa, PAGE_SIZE, MmNonCached))
        c->io_maps++;
    PMDL mdl = IoAllocateMdl((PVOID)(uintptr_t)c->buf, 2 * PAGE_SIZE, FALSE, FALSE, NULL);
    MmProbeAndLockPages(mdl, KernelMode, IoReadAccess);
    if (c->mode == 1)
        mdl->MdlFlags |= MDL_MAPPING_CAN_FAIL;
    if (c->mode == 0 || c->mode == 1)
        c->result = MmGetSystemAddressForMdl(mdl);
    else if (c->mode == 2)
        c->result = MmGetSystemAddressForMdlSafe(mdl, NormalPagePriority);
    else
        c->result = MmMapLockedPagesSpecifyCache(mdl, KernelMode, MmCached, NULL, FALSE,
                                                 NormalPagePriority);
    MmUnlockPages(mdl);
    IoFreeMdl(mdl);
}

static void test_no_more_system_ptes(void **state)
{
    (void)state;
    for (int mode = 0; mode < 4; mode++) {
        rig r = boot_rig(PTL_NT4_SP4, 0);
        exhaust_ctx c = {ptl_user_alloc(r.app, 2 * 4096), mode, (PVOID)1, 0};
        uint32_t code = call(&r, r.app, exhaust_then_map, &c);
        assert_true(c.io_maps > 300);
        if (mode == 0) {
            assert_int_equal(code, 0x3F);
            assert_string_equal(r.stop.name, "NO_MORE_SYSTEM_PTES");
            assert_int_equal(r.stop.param[0], 0);
            assert_int_equal(r.stop.param[1], 2);
            assert_int_equal(r.stop.param[2], ptl_free_system_ptes(r.m));
            assert_int_equal(r.stop.param[3], ptl_total_system_ptes(r.m));
        } else {
            assert_int_equal(code, 0);
            assert_null(c.result);
            assert_true(event_mentions(r.m, "fail", "MDL of 2 pages into system space failed"));
        }
        ptl_shutdown(r.m);
    }
}

typedef struct mdl_ctx {
    uint32_t buf;
    PMDL mdl;
    PVOID sys, user;
} mdl_ctx;

static void lock_and_map_both(void *arg)
{
    mdl_ctx *c = arg;
    c->mdl = IoAllocateMdl((PVOID)(uintptr_t)c->buf, PAGE_SIZE, FALSE, FALSE, NULL);
    MmProbeAndLockPages(c->mdl, KernelMode, IoModifyAccess);
    c->sys =
        MmMapLockedPagesSpecifyCache(c->mdl, KernelMode, MmCached, NULL, FALSE, NormalPagePriority);
    c->user =
        MmMapLockedPagesSpecifyCache(c->mdl, UserMode, MmCached, NULL, FALSE, NormalPagePriority);
}

static void free_mapped_mdl(void *arg)
{
    mdl_ctx *c = arg;
    IoFreeMdl(c->mdl);
}

static void unmap_user(void *arg)
{
    mdl_ctx *c = arg;
    MmUnmapLockedPages(c->user, c->mdl);
}

static void unmap_sys_twice(void *arg)
{
    mdl_ctx *c = arg;
    MmUnmapLockedPages(c->sys, c->mdl);
    MmUnmapLockedPages(c->sys, c->mdl);
}

static void test_free_mdl_still_mapped(void **state)
{
    (void)state;
    rig r = boot_rig(PTL_WIN2000, 0);
    mdl_ctx c = {ptl_user_alloc(r.app, 4096), NULL, NULL, NULL};
    uint32_t free0 = ptl_free_system_ptes(r.m);
    assert_int_equal(call(&r, r.app, lock_and_map_both, &c), 0);
    assert_non_null(c.sys);
    assert_int_equal(ptl_free_system_ptes(r.m), free0 - 1);
    /* the same bytes through both mappings */
    uint32_t v = 0x5A5A5A5A, back = 0;
    assert_int_equal(ptl_user_write(r.app, c.buf, &v, 4), STATUS_SUCCESS);
    assert_int_equal(ptl_user_read(r.app, (uint32_t)(uintptr_t)c.user, &back, 4), STATUS_SUCCESS);
    assert_int_equal(back, v);
    /* unmapping the user view from the wrong process is diagnosed and does nothing */
    assert_int_equal(call(&r, r.other, unmap_user, &c), 0);
    assert_true(event_mentions(r.m, "misuse", "lives in app.exe"));
    assert_int_equal(ptl_user_read(r.app, (uint32_t)(uintptr_t)c.user, &back, 4), STATUS_SUCCESS);
    /* IoFreeMdl while mapped: the PTEs leak for good */
    assert_int_equal(call(&r, r.app, free_mapped_mdl, &c), 0);
    assert_true(event_mentions(r.m, "misuse", "leaked for good"));
    assert_int_equal(ptl_free_system_ptes(r.m), free0 - 1);
    ptl_shutdown(r.m);
    /* with the verifier, 0xC4 subcode 0xB8 */
    r = boot_rig(PTL_WIN2000, 1);
    c.buf = ptl_user_alloc(r.app, 4096);
    assert_int_equal(call(&r, r.app, lock_and_map_both, &c), 0);
    assert_int_equal(call(&r, r.app, free_mapped_mdl, &c), 0xC4);
    assert_int_equal(r.stop.param[0], 0xB8);
    ptl_shutdown(r.m);
}

static void test_unmap_mdl_twice_xp(void **state)
{
    (void)state;
    rig r = boot_rig(PTL_WINXP, 0);
    mdl_ctx c = {ptl_user_alloc(r.app, 4096), NULL, NULL, NULL};
    assert_int_equal(call(&r, r.app, lock_and_map_both, &c), 0);
    assert_int_equal(call(&r, r.app, unmap_sys_twice, &c), 0xDA);
    assert_int_equal(r.stop.param[0], 0x06);
    ptl_shutdown(r.m);
}

typedef struct orphan_ctx {
    PVOID sys, user;
    PMDL mdl;
} orphan_ctx;

static void map_adapter_to_user(void *arg)
{
    orphan_ctx *c = arg;
    PHYSICAL_ADDRESS pa;
    pa.QuadPart = ADAPTER;
    c->sys = MmMapIoSpace(pa, PAGE_SIZE, MmNonCached);
    c->mdl = IoAllocateMdl(c->sys, PAGE_SIZE, FALSE, FALSE, NULL);
    MmBuildMdlForNonPagedPool(c->mdl);
    c->user = MmMapLockedPages(c->mdl, UserMode);
}

static void late_cleanup(void *arg)
{
    orphan_ctx *c = arg;
    MmUnmapLockedPages(c->user, c->mdl);
    MmUnmapIoSpace(c->sys, PAGE_SIZE);
    IoFreeMdl(c->mdl);
}

static void test_process_exit_with_mdl_user_mapping(void **state)
{
    (void)state;
    rig r = boot_rig(PTL_NT4_SP4, 0);
    uint32_t free0 = ptl_free_system_ptes(r.m);
    orphan_ctx c = {NULL, NULL, NULL};
    assert_int_equal(call(&r, r.app, map_adapter_to_user, &c), 0);
    assert_non_null(c.user);
    /* the adapter mapping is no pageable memory: it survives a swap-out */
    ptl_process_swap_out(r.app);
    uint32_t v = 0x11223344, back = 0;
    assert_int_equal(ptl_phys_write(r.m, ADAPTER, &v, 4), 0);
    assert_int_equal(ptl_user_read(r.app, (uint32_t)(uintptr_t)c.user, &back, 4), STATUS_SUCCESS);
    assert_int_equal(back, v);
    /* the application exits with the mapping in place: it goes with the address space */
    assert_int_equal(ptl_process_exit(r.app, &r.stop), 0);
    assert_true(event_mentions(r.m, "misuse", "exits with an MDL still mapped"));
    assert_int_equal(ptl_check(r.m), 0);
    /* the driver's late unmap finds nothing to do; the system mapping still goes */
    assert_int_equal(call(&r, NULL, late_cleanup, &c), 0);
    assert_true(event_mentions(r.m, "misuse", "after app.exe exited"));
    assert_int_equal(ptl_free_system_ptes(r.m), free0);
    assert_int_equal(ptl_check(r.m), 0);
    ptl_shutdown(r.m);
}

/* ---- noncached memory, attach ------------------------------------------------------------ */

typedef struct nc_ctx {
    PVOID va;
    uint32_t free_after_alloc;
    ptl_machine *m;
} nc_ctx;

static void noncached(void *arg)
{
    nc_ctx *c = arg;
    c->va = MmAllocateNonCachedMemory(5000);
    c->free_after_alloc = ptl_free_system_ptes(c->m);
    RtlFillMemory(c->va, 5000, 0xAB);
    MmFreeNonCachedMemory(c->va, 5000);
}

static void test_noncached_memory(void **state)
{
    (void)state;
    rig r = boot_rig(PTL_NT4_SP4, 0);
    uint32_t free0 = ptl_free_system_ptes(r.m);
    nc_ctx c = {NULL, 0, r.m};
    assert_int_equal(call(&r, NULL, noncached, &c), 0);
    assert_non_null(c.va);
    assert_int_equal((uintptr_t)c.va & 0xFFF, 0);
    assert_int_equal(c.free_after_alloc, free0 - 3); /* 2 pages + the size PTE */
    assert_int_equal(ptl_free_system_ptes(r.m), free0);
    assert_int_equal(ptl_check(r.m), 0);
    ptl_shutdown(r.m);
}

typedef struct attach_ctx {
    PEPROCESS target;
    uint32_t va;
    ULONG value;
    PEPROCESS during, after;
} attach_ctx;

static void attach_and_read(void *arg)
{
    attach_ctx *c = arg;
    KAPC_STATE apc;
    KeStackAttachProcess(c->target, &apc);
    c->during = PsGetCurrentProcess();
    RtlCopyMemory(&c->value, (PVOID)(uintptr_t)c->va, sizeof c->value);
    KeUnstackDetachProcess(&apc);
    c->after = PsGetCurrentProcess();
}

static void test_attach_reads_another_process(void **state)
{
    (void)state;
    rig r = boot_rig(PTL_WIN2000, 0);
    uint32_t va = ptl_user_alloc(r.app, 4096), v = 0x600DF00D;
    assert_int_equal(ptl_user_write(r.app, va, &v, 4), STATUS_SUCCESS);
    attach_ctx c = {ptl_process_eprocess(r.app), va, 0, NULL, NULL};
    assert_int_equal(call(&r, r.other, attach_and_read, &c), 0);
    assert_int_equal(c.value, 0x600DF00D);
    assert_ptr_equal(c.during, ptl_process_eprocess(r.app));
    assert_ptr_equal(c.after, ptl_process_eprocess(r.other));
    ptl_shutdown(r.m);
}

/* An APC state saved by an attach on machine A and handed to KeUnstackDetachProcess on
 * machine B (after an attach there) names a process B does not have. B stops with
 * INVALID_PROCESS_DETACH_ATTEMPT (0x06) instead of making A's process its current one,
 * which a review found; A is untouched and still detaches its own state. */
typedef struct cross_detach {
    rig *a, *b;
    KAPC_STATE saved_on_a;
    uint32_t b_code;
    PEPROCESS a_after;
} cross_detach;

static void detach_a_state_on_b(void *arg)
{
    cross_detach *c = arg;
    KAPC_STATE own;
    KeStackAttachProcess(ptl_process_eprocess(c->b->app), &own);
    KeUnstackDetachProcess(&c->saved_on_a);
}

static void attach_on_a_detach_on_b(void *arg)
{
    cross_detach *c = arg;
    KeStackAttachProcess(ptl_process_eprocess(c->a->app), &c->saved_on_a);
    ptl_stop stop;
    c->b_code = ptl_call(c->b->m, c->b->other, NULL, detach_a_state_on_b, c, &stop);
    KeUnstackDetachProcess(&c->saved_on_a);
    c->a_after = PsGetCurrentProcess();
}

static void test_detach_with_another_machines_state(void **state)
{
    (void)state;
    rig a = boot_rig(PTL_WIN2000, 0), b = boot_rig(PTL_WIN2000, 0);
    cross_detach c = {&a, &b, {0}, 0, NULL};
    assert_int_equal(call(&a, a.other, attach_on_a_detach_on_b, &c), 0);
    assert_int_equal(c.b_code, 0x06);
    assert_ptr_equal(c.a_after, ptl_process_eprocess(a.other));
    assert_int_equal(ptl_check(a.m), 0);
    assert_int_equal(ptl_check_full(a.m), 0);
    ptl_shutdown(a.m);
    ptl_shutdown(b.m);
}

/* Two MmMapIoSpace mappings of one page with different attributes (a hazard, recorded);
 * unmapping the first leaves the second's attribute in force, which decides an XP view's
 * fate: a matching view maps, a conflicting one is refused. */
typedef struct two_attr {
    PVOID nc, cached;
} two_attr;

static void map_two_attributes(void *arg)
{
    two_attr *t = arg;
    PHYSICAL_ADDRESS pa;
    pa.QuadPart = (LONGLONG)(ADAPTER + 0x4000);
    t->nc = MmMapIoSpace(pa, PAGE_SIZE, MmNonCached);
    t->cached = MmMapIoSpace(pa, PAGE_SIZE, MmCached);
    MmUnmapIoSpace(t->nc, PAGE_SIZE);
}

static void test_unmap_keeps_the_other_attribute(void **state)
{
    (void)state;
    rig r = boot_rig(PTL_WINXP, 0);
    two_attr t = {0};
    assert_int_equal(call(&r, NULL, map_two_attributes, &t), 0);
    assert_true(t.nc && t.cached);
    view_ctx cached = {PAGE_READWRITE, ADAPTER + 0x4000, 0, NULL, 0};
    assert_int_equal(call(&r, r.app, map_view, &cached), 0);
    assert_int_equal(cached.st, STATUS_SUCCESS);
    view_ctx nc = {PAGE_READWRITE | PAGE_NOCACHE, ADAPTER + 0x4000, 0, NULL, 0};
    assert_int_equal(call(&r, r.other, map_view, &nc), 0);
    assert_int_equal(nc.st, STATUS_CONFLICTING_ADDRESSES);
    assert_int_equal(ptl_check(r.m), 0);
    ptl_shutdown(r.m);
}

/* The attribute in force is the most recent mapping's, whether that mapping is tracked
 * per frame (an MDL mapping) or as a range (MmMapIoSpace): after a cached MDL mapping and
 * then a noncached MmMapIoSpace of the same page, an XP cached view of it is refused. */
typedef struct recent_ctx {
    PMDL mdl;
    PVOID sys, io;
    uint64_t pa;
} recent_ctx;

static void mdl_then_io(void *arg)
{
    recent_ctx *c = arg;
    PHYSICAL_ADDRESS lo, hi, skip, pa;
    lo.QuadPart = 0;
    hi.QuadPart = 0xFFFFFFFFll;
    skip.QuadPart = 0;
    c->mdl = MmAllocatePagesForMdl(lo, hi, skip, PAGE_SIZE);
    if (!c->mdl)
        return;
    c->sys =
        MmMapLockedPagesSpecifyCache(c->mdl, KernelMode, MmCached, NULL, FALSE, NormalPagePriority);
    c->pa = (uint64_t)MmGetMdlPfnArray(c->mdl)[0] << 12;
    pa.QuadPart = (LONGLONG)c->pa;
    c->io = MmMapIoSpace(pa, PAGE_SIZE, MmNonCached);
}

static void test_most_recent_attribute_wins(void **state)
{
    (void)state;
    rig r = boot_rig(PTL_WINXP, 0);
    recent_ctx c = {0};
    assert_int_equal(call(&r, NULL, mdl_then_io, &c), 0);
    assert_true(c.mdl && c.sys && c.io);
    view_ctx cached = {PAGE_READWRITE, c.pa, 0, NULL, 0};
    assert_int_equal(call(&r, r.app, map_view, &cached), 0);
    assert_int_equal(cached.st, STATUS_CONFLICTING_ADDRESSES);
    assert_true(event_mentions(r.m, "fail", "is mapped noncached"));
    assert_int_equal(ptl_check(r.m), 0);
    ptl_shutdown(r.m);
}

/* ---- sizes and addresses at the edges -----------------------------------------------------
 * A view size near 2^64 must not wrap into a small view, and the verifier's RAM check of
 * MmMapIoSpace must not wrap a physical address above 4 GB into a RAM frame number. */

static void map_io_above_4g(void *arg)
{
    PHYSICAL_ADDRESS pa;
    pa.QuadPart = (LONGLONG)(1ull << 44) + 0x3F00000; /* its low 32 bits of PFN: a RAM page */
    *(PVOID *)arg = MmMapIoSpace(pa, PAGE_SIZE, MmNonCached);
}

static void test_sizes_and_addresses_at_the_edges(void **state)
{
    (void)state;
    rig r = boot_rig(PTL_WINXP, 1);
    /* + the offset's rounding wraps past 2^64 */
    view_ctx c = {PAGE_READWRITE, ADAPTER + 0x1800, 0, NULL, (SIZE_T)-1 - 0x800};
    assert_int_equal(call(&r, r.app, map_view, &c), 0);
    assert_int_equal(c.st, STATUS_INVALID_VIEW_SIZE);
    PVOID va = (PVOID)1;
    assert_int_equal(call(&r, NULL, map_io_above_4g, &va), 0); /* no 0xC4 0x83 */
    assert_null(va);
    assert_int_equal(ptl_check(r.m), 0);
    ptl_shutdown(r.m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dpc_touches_user_view_in_wrong_context),
        cmocka_unit_test(test_conflicting_attributes_xp_refuses),
        cmocka_unit_test(test_conflicting_attributes_nt4_maps_and_records),
        cmocka_unit_test(test_view_of_ram_not_owned_is_a_hazard),
        cmocka_unit_test(test_user_mode_open_of_physical_memory),
        cmocka_unit_test(test_double_unmap_io_space),
        cmocka_unit_test(test_unmap_io_space_wrong_size),
        cmocka_unit_test(test_probe_bad_user_buffer),
        cmocka_unit_test(test_process_exit_with_locked_pages),
        cmocka_unit_test(test_no_more_system_ptes),
        cmocka_unit_test(test_free_mdl_still_mapped),
        cmocka_unit_test(test_unmap_mdl_twice_xp),
        cmocka_unit_test(test_process_exit_with_mdl_user_mapping),
        cmocka_unit_test(test_noncached_memory),
        cmocka_unit_test(test_attach_reads_another_process),
        cmocka_unit_test(test_detach_with_another_machines_state),
        cmocka_unit_test(test_sizes_and_addresses_at_the_edges),
        cmocka_unit_test(test_unmap_keeps_the_other_attribute),
        cmocka_unit_test(test_most_recent_attribute_wins),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
