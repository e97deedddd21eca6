/* test-phys.c - physical memory: sparse host backing, RAM and adapter apertures, the
 * HAL's bus translation, and the PFN database.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "internal.h"
#include "ptltest.h"
#include <ptelab/wdm.h>

#define MB (1024ull * 1024ull)

static ptl_machine *boot_mb(uint64_t ram_mb)
{
    ptl_config cfg;
    ptl_config_init(&cfg);
    cfg.ram_bytes = ram_mb * MB;
    ptl_machine *m = ptl_boot(&cfg);
    if (!m)
        fprintf(stderr, "boot of %llu MB failed: %s\n", (unsigned long long)ram_mb, ptl_error());
    assert_non_null(m);
    return m;
}

/* Resident set size in bytes, from /proc/self/statm (second field, in pages). */
static uint64_t rss_bytes(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    assert_non_null(f);
    unsigned long size = 0, resident = 0;
    assert_int_equal(fscanf(f, "%lu %lu", &size, &resident), 2);
    fclose(f);
    return (uint64_t)resident * (uint64_t)sysconf(_SC_PAGESIZE);
}

/* ---- host cost ------------------------------------------------------------------------ */

static void test_big_machine_is_cheap(void **state)
{
    (void)state;
    uint64_t before = rss_bytes();
    ptl_machine *m = boot_mb(3584);
    uint64_t after = rss_bytes();
    double grown = (double)(after > before ? after - before : 0) / (double)MB;
    printf("booting 3584 MB of RAM grew host RSS by %.2f MB (%.2f -> %.2f MB)\n", grown,
           (double)before / (double)MB, (double)after / (double)MB);
    assert_true(after < before + 16 * MB);
    assert_int_equal(m->phys.ram_pages, 3584u * 256u);
    /* the last and a middle frame of RAM work, and still cost next to nothing */
    uint32_t word = 0x600DF00Du, back = 0;
    uint64_t top = 3584 * MB - 4;
    assert_int_equal(ptl_phys_write(m, top, &word, 4), 0);
    assert_int_equal(ptl_phys_read(m, top, &back, 4), 0);
    assert_int_equal(back, word);
    assert_int_equal(ptl_phys_write(m, 2048 * MB, &word, 4), 0);
    assert_int_equal(ptl_phys_read(m, 2048 * MB, &back, 4), 0);
    assert_int_equal(back, word);
    /* reading all of RAM in big strides commits nothing */
    uint64_t mid = rss_bytes();
    uint8_t page[4096];
    for (uint64_t pa = 1024 * MB; pa < 3584 * MB; pa += 16 * MB)
        assert_int_equal(ptl_phys_read(m, pa + 4096, page, sizeof page), 0);
    assert_true(rss_bytes() < mid + 2 * MB);
    assert_int_equal(ptl_check(m), 0);
    ptl_shutdown(m);
}

/* ---- reads and writes ----------------------------------------------------------------- */

static void test_phys_round_trip(void **state)
{
    (void)state;
    ptl_machine *m = boot_mb(64);
    assert_int_equal(ptl_adapter_add(m, PCIBus, 0, 0xE0000000ull, 1u << 20), 0);
    uint64_t seed = ptltest_seed();
    printf("phys round trip: seed %llu (PTELAB_SEED=%llu replays)\n", (unsigned long long)seed,
           (unsigned long long)seed);
    ptltest_rng_state = seed * 2654435761u + 1;
    static uint8_t out[3 * 4096 + 17], in[sizeof out];
    for (int round = 0; round < 200; round++) {
        for (size_t i = 0; i < sizeof out; i++)
            out[i] = (uint8_t)ptltest_rnd();
        size_t n = 1 + ptltest_rnd() % sizeof out;
        /* RAM (across frame boundaries too) or the aperture. RAM below 32 MB holds the
         * page tables: a device scribbling there corrupts the machine, as it would on NT,
         * and ptl_check would rightly say so. */
        uint64_t pa = (round & 1) ? 0xE0000000ull + ptltest_rnd() % ((1u << 20) - n)
                                  : 32 * MB + (uint64_t)(ptltest_rnd() % (32 * MB - n));
        assert_int_equal(ptl_phys_write(m, pa, out, n), 0);
        memset(in, 0, sizeof in);
        assert_int_equal(ptl_phys_read(m, pa, in, n), 0);
        assert_memory_equal(in, out, n);
    }
    /* the end of RAM and the end of the aperture, exactly */
    uint32_t w = 0xFEEDBEEFu, r = 0;
    assert_int_equal(ptl_phys_write(m, 64 * MB - 4, &w, 4), 0);
    assert_int_equal(ptl_phys_read(m, 64 * MB - 4, &r, 4), 0);
    assert_int_equal(r, w);
    assert_int_equal(ptl_phys_write(m, 0xE0000000ull + (1u << 20) - 4, &w, 4), 0);
    /* one byte past either end is nothing's */
    assert_int_equal(ptl_phys_read(m, 64 * MB - 2, &r, 4), -1);
    assert_true(ptl_error()[0] != '\0');
    assert_int_equal(ptl_phys_write(m, 0xE0000000ull + (1u << 20) - 2, &w, 4), -1);
    assert_int_equal(ptl_phys_read(m, 0xD0000000ull, &r, 4), -1);
    assert_int_equal(ptl_phys_read(m, 4096ull * MB, &r, 4), -1);
    assert_int_equal(ptl_phys_read(m, 0, NULL, 4), -1);
    assert_int_equal(ptl_phys_read(NULL, 0, &r, 4), -1);
    assert_int_equal(ptl_check(m), 0);
    ptl_shutdown(m);
}

static void test_untouched_ram_is_zero(void **state)
{
    (void)state;
    ptl_machine *m = boot_mb(64);
    uint32_t touched0 = m->phys.touched_count;
    uint8_t buf[8192];
    /* frames that were never handed out: the top of RAM */
    memset(buf, 0xCC, sizeof buf);
    assert_int_equal(ptl_phys_read(m, 64 * MB - sizeof buf, buf, sizeof buf), 0);
    for (size_t i = 0; i < sizeof buf; i++)
        assert_int_equal(buf[i], 0);
    memset(buf, 0xCC, sizeof buf);
    assert_int_equal(ptl_phys_read(m, 32 * MB + 100, buf, sizeof buf), 0);
    for (size_t i = 0; i < sizeof buf; i++)
        assert_int_equal(buf[i], 0);
    /* reading did not commit them */
    assert_int_equal(m->phys.touched_count, touched0);
    /* a fresh aperture reads as zero too */
    assert_int_equal(ptl_adapter_add(m, PCIBus, 0, 0xE0000000ull, 1u << 16), 0);
    memset(buf, 0xCC, sizeof buf);
    assert_int_equal(ptl_phys_read(m, 0xE0000000ull, buf, sizeof buf), 0);
    for (size_t i = 0; i < sizeof buf; i++)
        assert_int_equal(buf[i], 0);
    ptl_shutdown(m);
}

/* ---- apertures ------------------------------------------------------------------------ */

static void expect_adapter_refused(ptl_machine *m, INTERFACE_TYPE bus, ULONG number, uint64_t at,
                                   uint64_t bytes, const char *why)
{
    int before = m->phys.napertures;
    assert_int_equal(ptl_adapter_add(m, bus, number, at, bytes), -1);
    const char *err = ptl_error();
    assert_true(err[0] != '\0');
    assert_string_not_equal(err, "no error");
    printf("adapter 0x%llx+0x%llx refused (%s): %s\n", (unsigned long long)at,
           (unsigned long long)bytes, why, err);
    assert_int_equal(m->phys.napertures, before); /* nothing changed */
}

static void test_adapter_refusals(void **state)
{
    (void)state;
    ptl_machine *m = boot_mb(64);
    assert_int_equal(ptl_adapter_add(m, PCIBus, 0, 0xE0000000ull, 1u << 20), 0);
    expect_adapter_refused(m, PCIBus, 0, 0x100000ull, 1u << 20, "RAM");
    expect_adapter_refused(m, PCIBus, 0, 64 * MB - 4096, 8192, "straddles the end of RAM");
    expect_adapter_refused(m, PCIBus, 0, 0xE0080000ull, 1u << 20, "overlaps the aperture");
    expect_adapter_refused(m, PCIBus, 0, 0xDFFFF000ull, 8192, "overlaps its first page");
    expect_adapter_refused(m, Isa, 0, 0xE0000000ull, 4096, "same range, other bus");
    expect_adapter_refused(m, PCIBus, 0, 0xFFF00000ull, 2u << 20, "runs past 4 GB");
    expect_adapter_refused(m, PCIBus, 0, 0x100000000ull, 4096, "above 4 GB");
    expect_adapter_refused(m, PCIBus, 0, 0xE0200800ull, 4096, "unaligned start");
    expect_adapter_refused(m, PCIBus, 0, 0xE0200000ull, 0x800, "unaligned size");
    expect_adapter_refused(m, PCIBus, 0, 0xE0200000ull, 0, "empty");
    expect_adapter_refused(m, (INTERFACE_TYPE)99, 0, 0xE0200000ull, 4096, "no such bus type");
    assert_int_equal(ptl_adapter_add(NULL, PCIBus, 0, 0xE0200000ull, 4096), -1);
    /* adjacent is fine, and so is the last page below 4 GB */
    assert_int_equal(ptl_adapter_add(m, PCIBus, 0, 0xE0100000ull, 4096), 0);
    assert_int_equal(ptl_adapter_add(m, PCIBus, 0, 0xFFFFF000ull, 4096), 0);
    assert_int_equal(ptl__phys_check(&m->phys, stderr), 0);
    assert_int_equal(ptl_check(m), 0);
    ptl_shutdown(m);
}

/* ---- HalTranslateBusAddress ------------------------------------------------------------ */

typedef struct xlate {
    INTERFACE_TYPE bus;
    ULONG number;
    uint64_t address;
    ULONG space_in;
    BOOLEAN ok;
    ULONG space_out;
    uint64_t translated;
} xlate;

typedef struct xlate_batch {
    xlate *x;
    size_t n;
    uint32_t mapped_value;
    uint64_t map_pa;
} xlate_batch;

static void do_translate(void *arg)
{
    xlate_batch *b = arg;
    for (size_t i = 0; i < b->n; i++) {
        xlate *x = &b->x[i];
        PHYSICAL_ADDRESS in, out;
        in.QuadPart = (LONGLONG)x->address;
        out.QuadPart = -1;
        ULONG space = x->space_in;
        x->ok = HalTranslateBusAddress(x->bus, x->number, in, &space, &out);
        x->space_out = space;
        x->translated = (uint64_t)out.QuadPart;
    }
    if (b->map_pa) {
        PHYSICAL_ADDRESS pa;
        pa.QuadPart = (LONGLONG)b->map_pa;
        PVOID v = MmMapIoSpace(pa, 4096, MmNonCached);
        if (v) {
            b->mapped_value = READ_REGISTER_ULONG((volatile ULONG *)v);
            MmUnmapIoSpace(v, 4096);
        }
    }
}

static void test_hal_translate(void **state)
{
    (void)state;
    ptl_machine *m = boot_mb(64);
    assert_int_equal(ptl_adapter_add(m, PCIBus, 0, 0xE0000000ull, 1u << 20), 0);
    /* PCI bus 1 sits behind a bridge that adds 0x10000000: its aperture at bus address
     * 0xC0000000 is at physical 0xD0000000 */
    assert_int_equal(ptl_bus_add(m, PCIBus, 1, 0x10000000ull, 0), 0);
    assert_int_equal(ptl_bus_add(m, PCIBus, 1, 0, 0), -1); /* exists already */
    assert_true(ptl_error()[0] != '\0');
    assert_int_equal(ptl_adapter_add(m, PCIBus, 1, 0xC0000000ull, 1u << 16), 0);
    uint32_t magic = 0xB0B0CAFEu;
    assert_int_equal(ptl_phys_write(m, 0xD0000000ull, &magic, 4), 0);
    /* the physical address is the translated one; the bus address is not decoded */
    uint32_t r = 0;
    assert_int_equal(ptl_phys_read(m, 0xD0000000ull, &r, 4), 0);
    assert_int_equal(r, magic);
    assert_int_equal(ptl_phys_read(m, 0xC0000000ull, &r, 4), -1);

    xlate x[] = {
        /* 0 */ {PCIBus, 0, 0xE0000000ull, 0, 0, 0, 0},
        /* 1 */ {PCIBus, 0, 0xE00FFFFCull, 0, 0, 0, 0},
        /* 2 */ {PCIBus, 0, 0xD8000000ull, 0, 0, 0, 0},  /* nothing decodes it */
        /* 3 */ {PCIBus, 0, 0xE0100000ull, 0, 0, 0, 0},  /* one past the aperture */
        /* 4 */ {PCIBus, 1, 0xC0000000ull, 0, 0, 0, 0},  /* with the bridge's offset */
        /* 5 */ {PCIBus, 1, 0xC0010000ull, 0, 0, 0, 0},  /* one past that aperture */
        /* 6 */ {PCIBus, 1, 0xE0000000ull, 0, 0, 0, 0},  /* bus 0's aperture is not on bus 1 */
        /* 7 */ {Isa, 0, 0x3F8ull, 1, 0, 0, 0},          /* COM1, in I/O space */
        /* 8 */ {Isa, 0, 0x10000ull, 1, 0, 0, 0},        /* beyond the 16-bit port space */
        /* 9 */ {PCIBus, 7, 0xE0000000ull, 0, 0, 0, 0},  /* no such bus */
        /* 10 */ {Eisa, 0, 0x3F8ull, 1, 0, 0, 0},        /* no EISA bus on this PC */
        /* 11 */ {PCIBus, 0, 0x00100000ull, 0, 0, 0, 0}, /* RAM, seen from a bus master */
        /* 12 */ {PCIBus, 0, 0xE0000000ull, 2, 0, 0, 0}, /* not an address space */
    };
    xlate_batch b = {x, sizeof x / sizeof x[0], 0, 0xD0000000ull};
    ptl_stop stop;
    assert_int_equal(ptl_call(m, NULL, NULL, do_translate, &b, &stop), 0);

    assert_true(x[0].ok);
    assert_int_equal(x[0].space_out, 0);
    assert_int_equal(x[0].translated, 0xE0000000ull);
    assert_true(x[1].ok);
    assert_int_equal(x[1].translated, 0xE00FFFFCull);
    assert_false(x[2].ok);
    assert_false(x[3].ok);
    assert_true(x[4].ok);
    assert_int_equal(x[4].space_out, 0);
    assert_int_equal(x[4].translated, 0xD0000000ull);
    assert_false(x[5].ok);
    assert_false(x[6].ok);
    assert_true(x[7].ok);
    assert_int_equal(x[7].space_out, 1);
    assert_int_equal(x[7].translated, 0x3F8ull);
    assert_false(x[8].ok);
    assert_false(x[9].ok);
    assert_false(x[10].ok);
    assert_true(x[11].ok);
    assert_int_equal(x[11].translated, 0x00100000ull);
    assert_int_equal(x[11].space_out, 0);
    assert_false(x[12].ok);
    /* the translated address is the one to map */
    assert_int_equal(b.mapped_value, magic);
    assert_int_equal(ptl_check(m), 0);
    ptl_shutdown(m);
}

/* ---- the PFN database ------------------------------------------------------------------ */

static void test_pfn_page_directory(void **state)
{
    (void)state;
    ptl_machine *m = boot_mb(64);
    assert_int_equal(ptl__phys_check(&m->phys, stderr), 0);
    uint32_t pds0 = m->phys.use_count[PTL_USE_PAGE_DIRECTORY];
    assert_int_equal(pds0, 1); /* the System process's */
    assert_int_equal(m->phys.pfn[m->pte.master_pd].Use, PTL_USE_PAGE_DIRECTORY);
    assert_int_equal(ptl_process_dirbase(ptl_system_process(m)) >> 12, m->pte.master_pd);
    uint32_t in_use0 = m->phys.in_use;

    ptl_process *p = ptl_process_create(m, "app.exe");
    assert_non_null(p);
    uint32_t pd = ptl_process_dirbase(p) >> 12;
    assert_int_equal(ptl_process_dirbase(p) & 0xFFFu, 0);
    assert_true(pd < m->phys.ram_pages);
    assert_int_not_equal(pd, m->pte.master_pd);
    const ptl__pfn *e = &m->phys.pfn[pd];
    assert_int_equal(e->Use, PTL_USE_PAGE_DIRECTORY);
    assert_int_equal(e->PageLocation, ActiveAndValid);
    assert_int_equal(e->OwnerPid, ptl_process_id(p));
    /* mapped once: by its own self-map entry, through which it is seen at 0xC0300000 */
    assert_int_equal(e->ShareCount, 1);
    assert_int_equal(e->PteAddress, PTL_PTE_VA(0xC0300000u));
    assert_int_equal(e->PteFrame, pd);
    assert_int_equal(m->phys.use_count[PTL_USE_PAGE_DIRECTORY], pds0 + 1);
    assert_int_equal(m->phys.in_use, in_use0 + 1);
    assert_int_equal(ptl__phys_check(&m->phys, stderr), 0);

    /* user memory adds a page table and a private page, owned by the process */
    uint32_t va = ptl_user_alloc(p, 4096);
    uint32_t word = 7;
    assert_int_equal(ptl_user_write(p, va, &word, 4), 0);
    uint32_t pde = ptl__pde_read(m, pd, va);
    assert_int_equal(m->phys.pfn[pde >> 12].Use, PTL_USE_PAGE_TABLE);
    assert_int_equal(m->phys.pfn[pde >> 12].OwnerPid, ptl_process_id(p));
    assert_int_equal(m->phys.in_use, in_use0 + 3);
    assert_int_equal(ptl__phys_check(&m->phys, stderr), 0);
    assert_int_equal(ptl_check(m), 0);

    /* exit gives all three frames back */
    assert_int_equal(ptl_process_exit(p, NULL), 0);
    assert_int_equal(m->phys.pfn[pd].Use, PTL_USE_FREE);
    assert_int_equal(m->phys.pfn[pd].PageLocation, FreePageList);
    assert_int_equal(m->phys.use_count[PTL_USE_PAGE_DIRECTORY], pds0);
    assert_int_equal(m->phys.in_use, in_use0);
    assert_int_equal(ptl__phys_check(&m->phys, stderr), 0);
    assert_int_equal(ptl_check(m), 0);

    /* a freed frame comes back zeroed */
    ptl_process *q = ptl_process_create(m, "next.exe");
    assert_non_null(q);
    uint32_t qva = ptl_user_alloc(q, 4096);
    uint32_t back = 0xFFFFFFFFu;
    assert_int_equal(ptl_user_read(q, qva, &back, 4), 0);
    assert_int_equal(back, 0);
    assert_int_equal(ptl__phys_check(&m->phys, stderr), 0);
    assert_int_equal(ptl_check(m), 0);
    ptl_shutdown(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_big_machine_is_cheap),  cmocka_unit_test(test_phys_round_trip),
        cmocka_unit_test(test_untouched_ram_is_zero), cmocka_unit_test(test_adapter_refusals),
        cmocka_unit_test(test_hal_translate),         cmocka_unit_test(test_pfn_page_directory),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
