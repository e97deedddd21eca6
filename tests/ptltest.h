/* ptltest.h - what several tests share: a machine with a PCI adapter, two processes, a
 * driver and a user buffer; a look through the event log; the randomised tests' seed and
 * generator. Include it after cmocka.h. */
#ifndef PTLTEST_H
#define PTLTEST_H

#include <ptelab/ptelab.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define PTLTEST_ADAPTER 0xE0000000ull

/* Randomised tests: PTELAB_SEED=N when set, else the time. Each test prints the seed it
 * used, so that PTELAB_SEED=N replays the run. */
static inline uint64_t ptltest_seed(void)
{
    const char *s = getenv("PTELAB_SEED");
    return s ? strtoull(s, NULL, 0) : (uint64_t)time(NULL);
}

/* xorshift64 on a state the test seeds (never 0). */
static uint64_t ptltest_rng_state __attribute__((unused)) = 1;
static inline uint64_t ptltest_rnd64(void)
{
    ptltest_rng_state ^= ptltest_rng_state << 13;
    ptltest_rng_state ^= ptltest_rng_state >> 7;
    ptltest_rng_state ^= ptltest_rng_state << 17;
    return ptltest_rng_state;
}
static inline uint32_t ptltest_rnd(void)
{
    return (uint32_t)(ptltest_rnd64() >> 11);
}

/* The seed for a randomised test: printed under `what`, so that PTELAB_SEED=N replays it,
 * and the generator seeded from it. */
static inline uint64_t ptltest_seed_rng(const char *what)
{
    uint64_t seed = ptltest_seed();
    printf("%s: seed %llu (PTELAB_SEED=%llu replays)\n", what, (unsigned long long)seed,
           (unsigned long long)seed);
    ptltest_rng_state = seed | 1;
    return seed;
}

typedef struct ptltest_rig {
    ptl_machine *m;
    ptl_process *app, *other;
    ptl_driver *drv;
    ptl_stop stop;
    uint32_t buf; /* 16 KB committed in app */
} ptltest_rig;

/* 64 MB, the profile, the verifier on or off, a 1 MB adapter on PCI bus 0. */
static inline ptltest_rig ptltest_boot(ptl_profile profile, int verifier)
{
    ptl_config cfg;
    ptl_config_init(&cfg);
    cfg.profile = profile;
    cfg.verifier = verifier;
    ptltest_rig r;
    memset(&r, 0, sizeof r);
    r.m = ptl_boot(&cfg);
    assert_non_null(r.m);
    assert_int_equal(ptl_adapter_add(r.m, PCIBus, 0, PTLTEST_ADAPTER, 1u << 20), 0);
    r.app = ptl_process_create(r.m, "app.exe");
    r.other = ptl_process_create(r.m, "other.exe");
    r.drv = ptl_driver_load(r.m, "drv.sys", 8192);
    assert_true(r.app && r.other && r.drv);
    r.buf = ptl_user_alloc(r.app, 4 * 4096);
    assert_true(r.buf != 0);
    return r;
}

static inline uint32_t ptltest_call(ptltest_rig *r, ptl_process *p, void (*fn)(void *), void *arg)
{
    return ptl_call(r->m, p, r->drv, fn, arg, &r->stop);
}

#ifdef PTELAB_WDM_H
/* Driver code: map `*size` bytes of \Device\PhysicalMemory at physical `pa` into the
 * current process with `protect` (ZwOpenSection + ZwMapViewOfSection; the section handle
 * is closed again). Returns the status of the first call that failed, else the map's. */
static inline NTSTATUS ptltest_map_physical(uint64_t pa, SIZE_T *size, ULONG protect, PVOID *base)
{
    UNICODE_STRING name;
    OBJECT_ATTRIBUTES oa;
    HANDLE section;
    RtlInitUnicodeString(&name, L"\\Device\\PhysicalMemory");
    InitializeObjectAttributes(&oa, &name, OBJ_CASE_INSENSITIVE | OBJ_KERNEL_HANDLE, NULL, NULL);
    NTSTATUS st = ZwOpenSection(&section, SECTION_ALL_ACCESS, &oa);
    if (!NT_SUCCESS(st))
        return st;
    LARGE_INTEGER off;
    off.QuadPart = (LONGLONG)pa;
    *base = NULL;
    st = ZwMapViewOfSection(section, NtCurrentProcess(), base, 0, 0, &off, size, ViewUnmap, 0,
                            protect);
    ZwClose(section);
    return st;
}
#endif

/* 1 when an event of `type` mentions `needle`. */
static inline int ptltest_event_mentions(ptl_machine *m, const char *type, const char *needle)
{
    ptl_event e;
    for (size_t i = 0; i < ptl_event_count(m); i++)
        if (ptl_event_get(m, i, &e) == 0 && strcmp(e.type, type) == 0 && strstr(e.text, needle))
            return 1;
    return 0;
}

#endif
