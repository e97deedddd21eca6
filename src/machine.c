/* machine.c - boot, shutdown, the harness entry points that belong to no single module,
 * and ptl_check.
 *
 * Boot order (each step may refuse with the reason in ptl_error(), leaving nothing
 * allocated): the host check, the layout from the configuration, physical memory and the
 * boot region's frames, the System page directory with the self-map, the MMU, the HAL's
 * buses, the system PTE pools with their page tables, the System process, the kernel.
 *
 * The host check. Emulated addresses are 32-bit values carried in pointers; host pointers
 * are told apart by value (DESIGN.md, "Addresses"). That needs the host's own code, data,
 * heap and stack above 4 GB, as on a 64-bit PIE Linux process. Boot refuses otherwise.
 *
 * ptl_check runs every module's check, the expensive walks (phys, pte, sysptes, process,
 * the views' PTEs) by their incremental twins (icheck.c), which re-check only what changed
 * since the last check; ptl_check_full runs the plain walks, the reference the twins are
 * tested against (tests/test-icheck.c; PTELAB_PARANOID builds compare the two at every
 * check). Native mode always walks everything: the host writes frames there unseen.
 *
 * Thread-local state: the current machine (inside ptl_call) and the last error message.
 */
#include "internal.h"

#include <errno.h>
#include <string.h>
#include <strings.h>
#if defined(__linux__)
#include <sys/mman.h>
#endif

/* The thread's current machine: ptelab's one global (ptelab/fastpath.h). */
_Thread_local ptl_machine *ptl__tls_machine;
static _Thread_local char tls_error[512];

void ptl__assert_fail(const char *expr, const char *file, int line)
{
    fprintf(stderr, "ptelab: internal error (a bug in ptelab, please report it): %s:%d: %s\n", file,
            line, expr);
    abort();
}

int ptl__fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(tls_error, sizeof tls_error, fmt, ap);
    va_end(ap);
    return -1;
}

const char *ptl_error(void)
{
    return tls_error[0] ? tls_error : "no error";
}

void *ptl__xcalloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p) {
        fprintf(stderr, "ptelab: the host is out of memory\n");
        abort();
    }
    return p;
}

/* Zeroed memory for a large structure touched at random (spool_fast's bitmap and levels
 * at 2^25 indices): with 4 KB host pages most random touches also miss the host's TLB,
 * and under a hypervisor that miss walks two sets of page tables. Requests of 2 MB or more
 * are therefore 2 MB aligned and offered to transparent huge pages (a hint the kernel may
 * decline). On this project's VM a random dependent load over 8 MB took 164 ns with 4 KB
 * pages and 130 ns with huge pages (docs/performance.md). Freed with free(). */
#define HUGE_PAGE (2u << 20)
void *ptl__xcalloc_huge(size_t n, size_t size)
{
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    size_t bytes = n * size;
    if (bytes >= HUGE_PAGE) {
        void *p = NULL;
        size_t rounded = (bytes + HUGE_PAGE - 1) / HUGE_PAGE * HUGE_PAGE;
        if (posix_memalign(&p, HUGE_PAGE, rounded) == 0) {
            (void)madvise(p, rounded, MADV_HUGEPAGE);
            memset(p, 0, bytes);
            return p;
        }
    }
#endif
    return ptl__xcalloc(n, size);
}

void *ptl__xrealloc(void *p, size_t size)
{
    void *q = realloc(p, size ? size : 1);
    if (!q) {
        fprintf(stderr, "ptelab: the host is out of memory\n");
        abort();
    }
    return q;
}

char *ptl__xstrdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = ptl__xcalloc(1, n);
    memcpy(d, s, n);
    return d;
}

ptl_machine *ptl_current(void)
{
    return ptl__tls_machine;
}

static const char *const profile_names[] = {"nt4sp3", "nt4sp4", "win2000", "winxp"};

int ptl_profile_from_name(const char *name)
{
    for (int k = 0; name && k < 4; k++)
        if (strcasecmp(name, profile_names[k]) == 0)
            return k;
    return -1;
}

const char *ptl_profile_name(ptl_profile profile)
{
    return (int)profile >= 0 && (int)profile < 4 ? profile_names[profile] : "?";
}

int ptl__parse_size_bytes(const char *s, double *bytes)
{
    if (!s)
        return -1;
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || !(v >= 0))
        return -1;
    double mult = 1;
    if (*end == 'K' || *end == 'k')
        mult = 1024.0, end++;
    else if (*end == 'M' || *end == 'm')
        mult = 1024.0 * 1024, end++;
    else if (*end == 'G' || *end == 'g')
        mult = 1024.0 * 1024 * 1024, end++;
    if (*end == 'B' || *end == 'b')
        end++;
    if (*end)
        return -1;
    *bytes = v * mult;
    return 0;
}

int ptl_fault_kinds_parse(const char *list, uint32_t *kinds)
{
    if (!list || !kinds)
        return ptl__fail("ptl_fault_kinds_parse: no list");
    static const struct {
        const char *name;
        uint32_t bits;
    } names[] = {{"syspte", PTL_FAULT_SYSPTES},
                 {"pool", PTL_FAULT_POOL},
                 {"mdl", PTL_FAULT_MDL},
                 {"all", PTL_FAULT_SYSPTES | PTL_FAULT_POOL | PTL_FAULT_MDL}};
    uint32_t bits = 0;
    for (const char *p = list; *p;) {
        size_t n = strcspn(p, ",");
        size_t i = 0;
        while (i < sizeof names / sizeof names[0] &&
               (strlen(names[i].name) != n || strncmp(names[i].name, p, n) != 0))
            i++;
        if (i == sizeof names / sizeof names[0])
            return ptl__fail("fault kinds: '%.*s' is not syspte, pool, mdl or all", (int)n, p);
        bits |= names[i].bits;
        p += n + (p[n] == ',');
    }
    if (!bits)
        return ptl__fail("fault kinds: the list is empty");
    *kinds = bits;
    return 0;
}

uint64_t ptl_parse_size(const char *s)
{
    double v;
    if (ptl__parse_size_bytes(s, &v) != 0 || !(v > 0) || v > 1e15)
        return 0;
    return (uint64_t)v;
}

void ptl__set_current(ptl_machine *m)
{
    ptl__tls_machine = m;
}

bool ptl__machine_ok(const ptl_machine *m)
{
    if (!m) {
        ptl__fail("machine handle is NULL");
        return false;
    }
    if (m->magic != PTL__MACHINE_MAGIC) {
        ptl__fail("%p is not a live ptelab machine", (const void *)m);
        return false;
    }
    return true;
}

void ptl_config_init(ptl_config *cfg)
{
    if (!cfg)
        return;
    memset(cfg, 0, sizeof *cfg);
    cfg->ram_bytes = 64ull << 20;
    cfg->profile = PTL_NT4_SP4;
    cfg->system_pages = 0;
    cfg->syspte_policy = PTL_SYSPTE_FIRST_FIT_LOW;
    cfg->seed = 1;
}

/* Host mappings below 4 GB. A normal 64-bit PIE process has none; under valgrind the
 * executable's own image sits at about 1 MB (valgrind loads PIE executables there) while
 * heap, stack and mmap go above 4 GB with --aspace-minaddr=0x100000000. Such "islands"
 * are told apart from emulated addresses by range, and user-space allocation in the
 * emulated machine steps around them (docs/fidelity.md, "Host addresses"). */
static void find_islands(ptl_machine *m)
{
    FILE *f = fopen("/proc/self/maps", "r");
    if (!f)
        return;
    char line[512];
    while (fgets(line, sizeof line, f) && m->nislands < PTL_MAX_ISLANDS) {
        unsigned long long lo, hi;
        if (sscanf(line, "%llx-%llx", &lo, &hi) != 2 || lo >= (1ull << 32))
            continue;
        if (hi > (1ull << 32))
            hi = 1ull << 32;
        m->islands[m->nislands].lo = (uint32_t)lo;
        m->islands[m->nislands].hi = (uint32_t)(hi - 1);
        m->nislands++;
    }
    fclose(f);
}

bool ptl__is_host(const ptl_machine *m, const volatile void *p)
{
    uintptr_t v = (uintptr_t)p;
    if (v >= (1ull << 32))
        return true;
    for (int i = 0; i < m->nislands; i++)
        if (v >= m->islands[i].lo && v <= m->islands[i].hi)
            return true;
    return false;
}

bool ptl__overlaps_island(const ptl_machine *m, uint32_t start, uint32_t end)
{
    for (int i = 0; i < m->nislands; i++)
        if (start <= m->islands[i].hi && m->islands[i].lo < end)
            return true;
    return false;
}

static int host_check(ptl_machine *m)
{
    int stack;
    void *heap = malloc(64);
    /* where the kernel places a mapping (large heap blocks, memfd views): mapped and
     * unmapped without touching it. A 1 MB malloc did the same, but under ASan it poisoned
     * and quarantined a megabyte at every boot (7 % of fuzz_ddi's perf samples). */
    void *big = mmap(NULL, 1u << 20, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (big == MAP_FAILED)
        big = NULL; /* nothing to learn: the other probes stand */
    const struct {
        const char *what;
        uintptr_t at;
    } probes[] = {
        {"stack", (uintptr_t)&stack},
        {"heap", (uintptr_t)heap},
        {"mmap", (uintptr_t)big},
    };
    int low = 0;
    for (size_t i = 0; i < sizeof probes / sizeof probes[0]; i++)
        if (probes[i].at && probes[i].at < (1ull << 32))
            low = (int)i + 1;
    free(heap);
    if (big)
        munmap(big, 1u << 20);
    if (sizeof(void *) < 8)
        return ptl__fail("ptelab needs a 64-bit host: a 32-bit host cannot tell its own "
                         "pointers from emulated x86 addresses");
    if (low)
        return ptl__fail("the host keeps its %s at %#llx, below 4 GB, where emulated x86 "
                         "addresses live; run ptelab as a position-independent 64-bit Linux "
                         "program (under valgrind: --aspace-minaddr=0x100000000)",
                         probes[low - 1].what, (unsigned long long)probes[low - 1].at);
    if ((uintptr_t)&host_check < (1ull << 32))
        find_islands(m); /* the image itself is low: valgrind */
    return 0;
}

static void machine_free(ptl_machine *m)
{
    ptl__icheck_reset(m);
    if (m->check_sink)
        fclose(m->check_sink);
    ptl__native_stop(m);
    ptl__pools_free(m);
    ptl__mdls_free(m);
    ptl__verifier_free(m);
    ptl__objects_free(m);
    ptl__cache_free(m);
    ptl__kernel_free(m);
    ptl__procs_free(m);
    ptl__sysptes_free(m);
    ptl__pte_free(m);
    ptl__hal_free(&m->hal);
    ptl__phys_free(&m->phys);
    ptl__perf_free(m);
    m->magic = 0;
    free(m);
}

ptl_machine *ptl_boot(const ptl_config *cfg)
{
    if (!cfg) {
        ptl__fail("ptl_boot: no configuration");
        return NULL;
    }
    if (cfg->syspte_policy != PTL_SYSPTE_FIRST_FIT_LOW &&
        cfg->syspte_policy != PTL_SYSPTE_FIRST_FIT_HIGH) {
        ptl__fail("ptl_boot: syspte_policy %d is neither PTL_SYSPTE_FIRST_FIT_LOW nor _HIGH",
                  (int)cfg->syspte_policy);
        return NULL;
    }
    if (cfg->native != PTL_NATIVE_AUTO && cfg->native != PTL_NATIVE_ON &&
        cfg->native != PTL_NATIVE_OFF) {
        ptl__fail("ptl_boot: native %d is not PTL_NATIVE_AUTO, _ON or _OFF", cfg->native);
        return NULL;
    }
    ptl_machine *m = ptl__xcalloc(1, sizeof *m);
    if (host_check(m) != 0) {
        free(m);
        return NULL;
    }
    m->cfg = *cfg;
    m->phys.memfd = -1;
    ptl__perf_init(m);
    if (ptl__layout_compute(&m->layout, cfg) != 0) {
        machine_free(m);
        return NULL;
    }
    if (ptl__phys_init(&m->phys, cfg->ram_bytes) != 0) {
        machine_free(m);
        return NULL;
    }
    m->magic = PTL__MACHINE_MAGIC;
    for (uint32_t i = 0; i < m->layout.boot_frames; i++)
        PTL_ASSERT(ptl__phys_alloc(&m->phys, PTL_USE_BOOT, 0) != UINT32_MAX);
    /* The page tables shared by all processes begin at the lowest system address: the
     * /USERVA extra PTE region when there is one, else MmSystemRangeStart. */
    if (ptl__pte_init(m, m->layout.extra_count ? m->layout.extra_va : m->layout.system_start) !=
        0) {
        machine_free(m);
        return NULL;
    }
    ptl__mmu_init(m, m->pte.master_pd);
    ptl__hal_init(&m->hal);
    if (ptl__sysptes_init(m) != 0) {
        machine_free(m);
        return NULL;
    }
    if (ptl__pools_init(m) != 0) {
        machine_free(m);
        return NULL;
    }
    ptl__procs_init(m);
    ptl__kernel_init(m);
    ptl__cache_init(m);
    ptl__objects_init(m);
    ptl__mdls_init(m);
    ptl__verifier_init(m);
    if (cfg->native != PTL_NATIVE_OFF) {
        const char *why = NULL;
        if (ptl__native_start(m, &why) == 0)
            ptl__perf_event(m, PTL_EV_NOTE, "native mode: emulated addresses are host addresses");
        else if (cfg->native == PTL_NATIVE_ON)
            fprintf(stderr,
                    "ptelab: native mode was asked for but cannot be had (%s); the "
                    "software MMU runs instead\n",
                    why);
    }
    ptl__perf_event(m, PTL_EV_BOOT,
                    "booted: %llu MB RAM, %u system PTEs at %08x, %u nonpaged pool expansion "
                    "PTEs",
                    (unsigned long long)(cfg->ram_bytes >> 20),
                    m->layout.syspte_count + m->layout.extra_count, m->layout.syspte_va,
                    m->layout.nppx_count);
    return m;
}

void ptl_shutdown(ptl_machine *m)
{
    if (!m || m->magic != PTL__MACHINE_MAGIC)
        return;
    if (m->frames) { /* driver code of this machine is running: its frames are in m */
        ptl__fail("ptl_shutdown: the machine is inside a call; shut it down after the call");
        return;
    }
    if (ptl__tls_machine == m)
        ptl__tls_machine = NULL;
    machine_free(m);
}

int ptl_native(const ptl_machine *m)
{
    return ptl__machine_ok(m) && m->native.on;
}

const ptl_config *ptl_machine_config(const ptl_machine *m)
{
    return ptl__machine_ok(m) ? &m->cfg : NULL;
}

int ptl_adapter_add(ptl_machine *m, INTERFACE_TYPE bus, ULONG bus_number, uint64_t bus_address,
                    uint64_t bytes)
{
    if (!ptl__machine_ok(m))
        return -1;
    if ((int)bus < 0 || bus >= MaximumInterfaceType)
        return ptl__fail("adapter on bus type %d, which is not an INTERFACE_TYPE", (int)bus);
    const ptl__bus *b = ptl__hal_bus(&m->hal, bus, bus_number);
    if (!b) {
        if (ptl__hal_add_bus(&m->hal, bus, bus_number, 0, 0) != 0)
            return -1;
        b = ptl__hal_bus(&m->hal, bus, bus_number);
    }
    ptl__aperture ap = {bus, bus_number, bus_address, bus_address + b->translation, bytes};
    if (ap.phys < bus_address)
        return ptl__fail("bus address 0x%llx overflows with the bus translation",
                         (unsigned long long)bus_address);
    if (ptl__phys_add_aperture(&m->phys, &ap) != 0)
        return -1;
    /* Mappings of the range made before (MmMapIoSpace may map any physical address) now
     * reach the device: what the TLB and the host mirror cached as "nothing decodes here"
     * is stale. Adding a device is rare, so all of it is dropped and redone. */
    ptl__mmu_flush(m, 1);
    ptl__native_resync(m);
    ptl__perf_event(m, PTL_EV_NOTE, "adapter on %s %u: bus 0x%llx -> physical 0x%llx, %llu KB",
                    ptl__bus_name(bus), bus_number, (unsigned long long)bus_address,
                    (unsigned long long)ap.phys, (unsigned long long)(bytes >> 10));
    return 0;
}

int ptl_bus_add(ptl_machine *m, INTERFACE_TYPE bus, ULONG bus_number, uint64_t translation,
                int io_space)
{
    if (!ptl__machine_ok(m))
        return -1;
    return ptl__hal_add_bus(&m->hal, bus, bus_number, translation, io_space);
}

int ptl_phys_read(ptl_machine *m, uint64_t pa, void *buf, size_t n)
{
    if (!ptl__machine_ok(m))
        return -1;
    if (!buf && n)
        return ptl__fail("ptl_phys_read: NULL buffer");
    if (ptl__phys_copy(&m->phys, pa, buf, n, 0) != 0)
        return ptl__fail("physical range 0x%llx+0x%zx is not all RAM or adapter memory",
                         (unsigned long long)pa, n);
    return 0;
}

int ptl_phys_write(ptl_machine *m, uint64_t pa, const void *buf, size_t n)
{
    if (!ptl__machine_ok(m))
        return -1;
    if (!buf && n)
        return ptl__fail("ptl_phys_write: NULL buffer");
    /* Page directories and tables are refused, as kd's e* refuses them: the model's
     * bookkeeping (PFN counts, the pools' run maps) trusts what it wrote there, and a
     * stray write would end in an internal assertion, not in NT's later STOP. */
    for (uint64_t at = pa & ~(uint64_t)PTL_PAGE_MASK; n && at < pa + n && at < (4ull << 30);
         at += PTL_PAGE_SIZE) {
        uint64_t pfn = at >> PTL_PAGE_SHIFT;
        if (pfn < m->phys.ram_pages && (m->phys.pfn[pfn].Use == PTL_USE_PAGE_DIRECTORY ||
                                        m->phys.pfn[pfn].Use == PTL_USE_PAGE_TABLE))
            return ptl__fail("ptl_phys_write: physical 0x%llx is in a %s (pfn 0x%llx); paging "
                             "structures are not written from outside",
                             (unsigned long long)at, ptl__frame_use_name(m->phys.pfn[pfn].Use),
                             (unsigned long long)pfn);
    }
    if (ptl__phys_copy(&m->phys, pa, (void *)(uintptr_t)buf, n, 1) != 0)
        return ptl__fail("physical range 0x%llx+0x%zx is not all RAM or adapter memory",
                         (unsigned long long)pa, n);
    return 0;
}

uint32_t ptl_free_system_ptes(const ptl_machine *m)
{
    if (!ptl__machine_ok(m))
        return 0;
    return ptl__spool_free_count(m->sysptes.pool[PTL_SYSTEM_PTE_SPACE].alloc);
}

uint32_t ptl_total_system_ptes(const ptl_machine *m)
{
    if (!ptl__machine_ok(m))
        return 0;
    const ptl__syspool *p = &m->sysptes.pool[PTL_SYSTEM_PTE_SPACE];
    return p->seg1_va ? p->total - 1 : p->total; /* the junction is not a PTE one can have */
}

uint32_t ptl_largest_free_system_ptes(const ptl_machine *m)
{
    if (!ptl__machine_ok(m))
        return 0;
    return ptl__spool_largest(m->sysptes.pool[PTL_SYSTEM_PTE_SPACE].alloc);
}

void ptl_syspte_stats_get(const ptl_machine *m, ptl_syspte_stats *out)
{
    if (!out)
        return;
    memset(out, 0, sizeof *out);
    if (!ptl__machine_ok(m))
        return;
    const ptl__syspool *p = &m->sysptes.pool[PTL_SYSTEM_PTE_SPACE];
    ptl__spool_stats st;
    ptl__spool_stats_get(p->alloc, &st);
    out->base_va = p->seg0_va;
    out->total = ptl_total_system_ptes(m);
    out->free = st.free;
    out->largest_free = st.largest;
    out->free_runs = st.runs;
    out->peak_used = p->peak_used;
    out->failed_total = p->failed_total;
    out->failed_fragmented = p->failed_fragmented;
    memcpy(out->hist, st.hist, sizeof out->hist);
}

int ptl_layout_regions(const ptl_machine *m, const ptl_region **regions)
{
    if (!ptl__machine_ok(m))
        return 0;
    if (regions)
        *regions = m->layout.regions;
    return m->layout.nregions;
}

void ptl_layout_print(const ptl_machine *m, FILE *out)
{
    if (!ptl__machine_ok(m) || !out)
        return;
    const ptl__layout *l = &m->layout;
    static const char *const profiles[] = {"NT 4.0 SP3", "NT 4.0 SP4", "Windows 2000",
                                           "Windows XP"};
    fprintf(out, "%s, %llu MB RAM%s%s\n", profiles[m->cfg.profile],
            (unsigned long long)(m->cfg.ram_bytes >> 20), m->cfg.boot_3gb ? ", /3GB" : "",
            m->cfg.userva_mb ? ", /USERVA" : "");
    fprintf(out, "%-34s %-10s %-10s %10s\n", "region", "start", "end", "size");
    for (int i = 0; i < l->nregions; i++) {
        const ptl_region *r = &l->regions[i];
        uint64_t end = r->end ? r->end : (1ull << 32);
        uint64_t size = end - r->start;
        char sz[32];
        if (size >= (1u << 20) && size % (1u << 20) == 0)
            snprintf(sz, sizeof sz, "%llu MB", (unsigned long long)(size >> 20));
        else
            snprintf(sz, sizeof sz, "%llu KB", (unsigned long long)(size >> 10));
        fprintf(out, "%-34s 0x%08X 0x%08llX %10s\n", r->name, r->start,
                (unsigned long long)(end - 1), sz);
    }
    ptl_syspte_stats st;
    ptl_syspte_stats_get(m, &st);
    fprintf(out,
            "System PTEs: %u total (RAM-based default %u%s), %u free, largest free run "
            "%u\n",
            st.total, l->computed_system_ptes,
            m->cfg.system_pages == 0            ? ""
            : m->cfg.system_pages == 0xFFFFFFFF ? ", SystemPages maximum"
                                                : ", SystemPages set",
            st.free, st.largest_free);
    fprintf(out, "Nonpaged pool: %u KB initial, %u KB maximum; %u expansion PTEs\n",
            l->inp_bytes >> 10, l->max_npp_bytes >> 10, l->nppx_count);
    fprintf(out, "Paged pool: %u KB\n", (l->paged_end - l->paged_va) >> 10);
}

/* Every module's invariants, walking everything: the plain reference. */
static int check_full(ptl_machine *m, FILE *why)
{
    return ptl__layout_check(&m->layout, why) || ptl__phys_check(&m->phys, why) ||
                   ptl__pte_check(m, why) || ptl__sysptes_check(m, why) || ptl__mmu_check(m, why) ||
                   ptl__process_check(m, why) || ptl__kernel_check(m, why) ||
                   ptl__cache_check(m, why) || ptl__objects_check(m, why) ||
                   ptl__mdls_check(m, why) || ptl__pools_check(m, why) ||
                   ptl__native_check(m, why) || ptl__hal_check(&m->hal, why) ||
                   ptl__perf_check(m, 1, why)
               ? -1
               : 0;
}

/* The same invariants, the expensive walks (phys, pte, sysptes, process) replaced by their
 * incremental twins (icheck.c). Native mode maps frames into the host, where writes cannot
 * be followed: there it walks everything. */
static int check_incremental(ptl_machine *m, FILE *why)
{
    if (m->native.on)
        return check_full(m, why);
    if (ptl__layout_check(&m->layout, why) || ptl__icheck_memory(m, why))
        return -1;
    /* the MMU check walks pages through the writable accessor, but only reads */
    uint32_t written = m->phys.nwritten;
    int rc = ptl__mmu_check(m, why);
    ptl__phys_written_truncate(&m->phys, written);
    if (rc || ptl__icheck_processes(m, why))
        return -1;
    return ptl__kernel_check(m, why) || ptl__cache_check(m, why) ||
                   ptl__objects_check_changed(m, why) || ptl__mdls_check(m, why) ||
                   ptl__pools_check(m, why) || ptl__native_check(m, why) ||
                   ptl__hal_check(&m->hal, why) || ptl__perf_check(m, 0, why)
               ? -1
               : 0;
}

static ssize_t discard(void *cookie, const char *buf, size_t n)
{
    (void)cookie;
    (void)buf;
    return (ssize_t)n;
}

/* The reasons go to a sink on the first pass; only a failure pays for collecting them. */
static FILE *sink(ptl_machine *m)
{
    if (!m->check_sink) {
        cookie_io_functions_t io = {NULL, discard, NULL, NULL};
        m->check_sink = fopencookie(NULL, "w", io);
    }
    return m->check_sink;
}

static int run_pass(ptl_machine *m, int full, FILE *why)
{
    int rc = full ? check_full(m, why) : check_incremental(m, why);
    if (!full && rc)
        ptl__icheck_reset(m); /* the next check starts afresh */
#ifdef PTELAB_PARANOID
    /* paranoid builds hold the incremental check to the plain walks at every check */
    if (!full) {
        FILE *quiet = sink(m);
        if (quiet && (check_full(m, quiet) != 0) != (rc != 0)) {
            fprintf(stderr,
                    "ptelab: internal error (a bug in ptelab, please report it): the "
                    "incremental check says the machine is %s, the full walk disagrees\n",
                    rc ? "broken" : "intact");
            abort();
        }
    }
#endif
    return rc;
}

static int run_check(ptl_machine *m, int full)
{
    if (!ptl__machine_ok(m))
        return -1;
    FILE *quiet = sink(m);
    if (quiet && run_pass(m, full, quiet) == 0)
        return 0;
    char *text = NULL;
    size_t len = 0;
    FILE *why = open_memstream(&text, &len);
    if (!why)
        return ptl__fail("ptl_check: no memory for the report");
    int rc = run_pass(m, full, why);
    fclose(why);
    if (rc)
        ptl__fail("invariant broken: %s", text ? text : "?");
    else if (quiet) /* the second look, from nothing, found no fault: the first was wrong */
        rc = ptl__fail("invariant broken: the incremental check found a fault that a fresh "
                       "look does not (a bug in ptelab)");
    free(text);
    return rc;
}

int ptl_check(ptl_machine *m)
{
    return run_check(m, 0);
}

int ptl_check_full(ptl_machine *m)
{
    return run_check(m, 1);
}
