/* test-pfn.c - a frame's counts through its lives: locked while its owner frees it, taken
 * by MmAllocatePagesForMdl while others map it, mapped more often than 16 bits count.
 *
 * NT frees a page only when its reference count reaches zero: an owner that lets go of a
 * page another driver still has locked (a driver image page locked before unload, a page
 * table locked through the self-map before its process exits) leaves it referenced until
 * the last MmUnlockPages. Each case checks the PFN entry's counts (ReferenceCount is
 * ShareCount + LockCount), that the frame is freed exactly when the last holder lets go,
 * and that ptl_check_full agrees at every step. Each of them aborted the host before the
 * fix (phys.c asserted that a released frame had no locks; MmAllocatePagesForMdl assigned
 * the counts instead of adding to them; the counts were 16 bits wide).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <cmocka.h>

#include "internal.h"
#include <ptelab/wdm.h>

typedef struct lock_case {
    uint32_t va;   /* what to lock */
    PMDL mdl;      /* the lock */
    PVOID maps[2]; /* MmMapIoSpace mappings */
} lock_case;

static void lock_page(void *arg)
{
    lock_case *c = arg;
    c->mdl = IoAllocateMdl((PVOID)(uintptr_t)c->va, PAGE_SIZE, FALSE, FALSE, NULL);
    if (c->mdl)
        MmProbeAndLockPages(c->mdl, KernelMode, IoReadAccess);
}

static void unlock_page(void *arg)
{
    lock_case *c = arg;
    MmUnlockPages(c->mdl);
    IoFreeMdl(c->mdl);
}

static void counts_add_up(const ptl__pfn *e)
{
    assert_int_equal(e->ReferenceCount, e->ShareCount + e->LockCount);
}

/* The frame behind va in the current context of the machine's system process. */
static uint32_t frame_of(ptl_machine *m, uint32_t va)
{
    uint32_t pte = 0;
    assert_int_equal(ptl__pte_read(m, 0, va, &pte), 0);
    assert_true(pte & PTL_PTE_VALID);
    return pte >> PTL_PAGE_SHIFT;
}

/* A driver locks a page of its own image and unloads without unlocking it. */
static void test_image_page_locked_at_unload(void **state)
{
    (void)state;
    ptl_config cfg;
    ptl_config_init(&cfg);
    ptl_machine *m = ptl_boot(&cfg);
    ptl_driver *d = ptl_driver_load(m, "leaky.sys", 0x4000);
    ptl_driver *other = ptl_driver_load(m, "other.sys", 0x2000);
    assert_true(m && d && other);
    lock_case c = {.va = ptl_driver_base(d) + 0x1000};
    uint32_t pfn = frame_of(m, c.va);
    ptl_stop stop;
    assert_int_equal(ptl_call(m, NULL, d, lock_page, &c, &stop), 0);
    assert_non_null(c.mdl);
    assert_int_equal(m->phys.pfn[pfn].LockCount, 1);
    assert_int_equal(ptl_driver_unload(d, &stop), 0);
    const ptl__pfn *e = &m->phys.pfn[pfn];
    assert_int_equal(e->Use, PTL_USE_DRIVER_IMAGE); /* still referenced: not free yet */
    assert_true(e->FreeWhenUnlocked);
    counts_add_up(e);
    assert_int_equal(ptl_check_full(m), 0);
    uint32_t free_before = m->phys.free_count;
    assert_int_equal(ptl_call(m, NULL, other, unlock_page, &c, &stop), 0);
    assert_int_equal(e->Use, PTL_USE_FREE); /* the last unlock freed it */
    assert_false(e->FreeWhenUnlocked);
    assert_int_equal(m->phys.free_count, free_before + 1);
    assert_int_equal(ptl_check_full(m), 0);
    assert_int_equal(ptl_check(m), 0);
    ptl_shutdown(m);
}

/* A page table locked through the self-map (0xC0000000) while its process exits. */
static void test_page_table_locked_at_exit(void **state)
{
    (void)state;
    ptl_config cfg;
    ptl_config_init(&cfg);
    ptl_machine *m = ptl_boot(&cfg);
    ptl_process *p = ptl_process_create(m, "app.exe");
    assert_true(m && p);
    uint32_t buf = ptl_user_alloc(p, PAGE_SIZE);
    assert_true(buf != 0);
    uint32_t word = 0x1234;
    assert_int_equal(ptl_user_write(p, buf, &word, sizeof word), 0); /* the table exists */
    lock_case c = {.va = 0xC0000000u + (buf >> 22) * PAGE_SIZE};
    ptl_stop stop;
    assert_int_equal(ptl_call(m, p, NULL, lock_page, &c, &stop), 0);
    assert_non_null(c.mdl);
    uint32_t pde = 0, pd = ptl_process_dirbase(p) >> PTL_PAGE_SHIFT;
    pde = ((const uint32_t *)(const void *)ptl__phys_frame_ro(&m->phys, pd))[buf >> 22];
    uint32_t table = pde >> PTL_PAGE_SHIFT;
    assert_int_equal(m->phys.pfn[table].LockCount, 1);
    assert_int_equal(ptl_process_exit(p, &stop), 0);
    const ptl__pfn *e = &m->phys.pfn[table];
    assert_int_equal(e->Use, PTL_USE_PAGE_TABLE);
    assert_true(e->FreeWhenUnlocked);
    assert_int_equal(ptl_check_full(m), 0);
    assert_int_equal(ptl_call(m, NULL, NULL, unlock_page, &c, &stop), 0);
    assert_int_equal(e->Use, PTL_USE_FREE);
    assert_int_equal(e->ReferenceCount, 0);
    assert_int_equal(ptl_check_full(m), 0);
    assert_int_equal(ptl_check(m), 0);
    ptl_shutdown(m);
}

#define RAM_PAGE 0x3F00000u /* a free RAM page near the top of the default 64 MB */

static void map_twice_then_take(void *arg)
{
    lock_case *c = arg;
    PHYSICAL_ADDRESS pa, lo, hi, skip;
    pa.QuadPart = RAM_PAGE;
    c->maps[0] = MmMapIoSpace(pa, PAGE_SIZE, MmCached);
    c->maps[1] = MmMapIoSpace(pa, PAGE_SIZE, MmCached);
    lo.QuadPart = RAM_PAGE;
    hi.QuadPart = RAM_PAGE + PAGE_SIZE - 1;
    skip.QuadPart = 0;
    c->mdl = MmAllocatePagesForMdl(lo, hi, skip, PAGE_SIZE);
}

static void unmap_first(void *arg)
{
    lock_case *c = arg;
    MmUnmapIoSpace(c->maps[0], PAGE_SIZE);
}

static void unmap_second_and_free(void *arg)
{
    lock_case *c = arg;
    MmUnmapIoSpace(c->maps[1], PAGE_SIZE);
    MmFreePagesFromMdl(c->mdl);
    ExFreePool(c->mdl);
}

/* MmAllocatePagesForMdl takes a free frame that two MmMapIoSpace mappings already map: it
 * adds its lock to their counts. */
static void test_mdl_pages_keep_mappings(void **state)
{
    (void)state;
    ptl_config cfg;
    ptl_config_init(&cfg);
    cfg.profile = PTL_WIN2000;
    ptl_machine *m = ptl_boot(&cfg);
    assert_non_null(m);
    const ptl__pfn *e = &m->phys.pfn[RAM_PAGE >> PTL_PAGE_SHIFT];
    lock_case c = {0};
    ptl_stop stop;
    assert_int_equal(ptl_call(m, NULL, NULL, map_twice_then_take, &c, &stop), 0);
    assert_true(c.maps[0] && c.maps[1] && c.mdl);
    assert_int_equal(MmGetMdlPfnArray(c.mdl)[0], RAM_PAGE >> PTL_PAGE_SHIFT);
    assert_int_equal(e->ShareCount, 2);
    assert_int_equal(e->LockCount, 1);
    counts_add_up(e);
    assert_int_equal(ptl_check_full(m), 0);
    assert_int_equal(ptl_call(m, NULL, NULL, unmap_first, &c, &stop), 0);
    assert_int_equal(e->ShareCount, 1);
    counts_add_up(e);
    assert_int_equal(ptl_call(m, NULL, NULL, unmap_second_and_free, &c, &stop), 0);
    assert_int_equal(e->ReferenceCount, 0);
    assert_int_equal(e->Use, PTL_USE_FREE);
    assert_int_equal(ptl_check_full(m), 0);
    ptl_shutdown(m);
}

#define MANY 65537u /* one more than a 16-bit count holds */

typedef struct many_case {
    PVOID *va;
    uint32_t mapped;
} many_case;

static void map_many(void *arg)
{
    many_case *c = arg;
    PHYSICAL_ADDRESS pa;
    pa.QuadPart = RAM_PAGE;
    for (c->mapped = 0; c->mapped < MANY; c->mapped++)
        if (!(c->va[c->mapped] = MmMapIoSpace(pa, PAGE_SIZE, MmCached)))
            break;
}

static void unmap_many(void *arg)
{
    many_case *c = arg;
    for (uint32_t i = 0; i < c->mapped; i++)
        MmUnmapIoSpace(c->va[i], PAGE_SIZE);
}

/* More mappings of one RAM page than 16 bits count (NT keeps no count for MmMapIoSpace
 * mappings; ptelab does, so its count must not wrap). */
static void test_share_count_beyond_16_bits(void **state)
{
    (void)state;
    ptl_config cfg;
    ptl_config_init(&cfg);
    cfg.system_pages = 0xFFFFFFFFu; /* as many system PTEs as fit */
    /* native mode would need a host mapping per page here, beyond Linux's default
     * vm.max_map_count of 65530 (docs/fidelity.md) */
    cfg.native = PTL_NATIVE_OFF;
    ptl_machine *m = ptl_boot(&cfg);
    assert_non_null(m);
    many_case c = {.va = calloc(MANY, sizeof(PVOID))};
    assert_non_null(c.va);
    ptl_stop stop;
    assert_int_equal(ptl_call(m, NULL, NULL, map_many, &c, &stop), 0);
    assert_int_equal(c.mapped, MANY);
    const ptl__pfn *e = &m->phys.pfn[RAM_PAGE >> PTL_PAGE_SHIFT];
    assert_int_equal(e->ShareCount, MANY);
    counts_add_up(e);
    assert_int_equal(ptl_check_full(m), 0);
    assert_int_equal(ptl_call(m, NULL, NULL, unmap_many, &c, &stop), 0);
    assert_int_equal(e->ShareCount, 0);
    assert_int_equal(e->ReferenceCount, 0);
    assert_int_equal(ptl_check_full(m), 0);
    free(c.va);
    ptl_shutdown(m);
}

/* A frame never handed out can still hold data: a driver wrote it through MmMapIoSpace of
 * RAM it does not own. The next frame handed out (a page directory, a demand-zero page)
 * must come out zeroed all the same. */
static uint32_t scribble_at;

static void scribble(void *arg)
{
    (void)arg;
    PHYSICAL_ADDRESS pa;
    pa.QuadPart = (LONGLONG)scribble_at * PAGE_SIZE;
    volatile ULONG *va = MmMapIoSpace(pa, 32 * PAGE_SIZE, MmCached);
    if (!va)
        return;
    for (uint32_t i = 0; i < 32 * 1024; i++)
        WRITE_REGISTER_ULONG(va + i, 0x41414067u); /* looks like valid PDEs */
    MmUnmapIoSpace((PVOID)va, 32 * PAGE_SIZE);
}

static void test_fresh_frames_are_zeroed(void **state)
{
    (void)state;
    ptl_config cfg;
    ptl_config_init(&cfg);
    ptl_machine *m = ptl_boot(&cfg);
    assert_non_null(m);
    scribble_at = m->phys.hwm; /* the next frames ptl__phys_alloc takes */
    ptl_stop stop;
    assert_int_equal(ptl_call(m, NULL, NULL, scribble, NULL, &stop), 0);
    ptl_process *p = ptl_process_create(m, "app.exe");
    assert_non_null(p);
    uint32_t va = ptl_user_alloc(p, 4 * PAGE_SIZE), word = 1;
    assert_true(va != 0);
    assert_int_equal(ptl_user_read(p, va + 8, &word, 4), 0);
    assert_int_equal(word, 0);
    assert_int_equal(ptl_check_full(m), 0);
    ptl_shutdown(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_image_page_locked_at_unload),
        cmocka_unit_test(test_page_table_locked_at_exit),
        cmocka_unit_test(test_mdl_pages_keep_mappings),
        cmocka_unit_test(test_share_count_beyond_16_bits),
        cmocka_unit_test(test_fresh_frames_are_zeroed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
