/* stop.c - bug checks: codes, names, parameters, the STOP screen, the frozen machine.
 *
 * Models KeBugCheckEx. When NT meets a condition it cannot survive it stops with a code
 * and four parameters. ptelab freezes the machine (every later call returns the same
 * STOP; counters and kd still answer, DESIGN.md "Bug checks") and unwinds with longjmp to
 * the innermost harness frame, the protected-call pattern of Lua's lua_pcall. A driver's
 * PTL_TRY frames are skipped: a bug check is not an exception and cannot be caught.
 *
 * The codes, names and parameter meanings come from Microsoft's bug check reference
 * (learn.microsoft.com/windows-hardware/drivers/debugger/bug-check-code-reference2),
 * collected with sources in docs/research/bugchecks-and-ddis.md. The screen's first line
 * follows the NT 4.0 Resource Kit, chapter 38 ("The STOP Message Screen"):
 *     *** STOP: 0x0000003F (0x00000000,0x00000008,0x00000000,0x00005600)
 *     NO_MORE_SYSTEM_PTES
 *
 * Invariant: once stopped, the STOP never changes until shutdown.
 */
#include "internal.h"

#include <stdarg.h>
#include <string.h>

/* code, name, summary, P1..P4 */
#define PTL_BUGCHECKS(X)                                                                           \
    X(0x05, "INVALID_PROCESS_ATTACH_ATTEMPT",                                                      \
      "A thread attached to a process wrongly (at raised IRQL, twice, or unmatched).",             \
      "the process", "the process attached to now", "attach depth", "IRQL")                        \
    X(0x06, "INVALID_PROCESS_DETACH_ATTEMPT",                                                      \
      "KeUnstackDetachProcess without a matching KeStackAttachProcess, or with an APC state "      \
      "that names no live process of this machine.",                                               \
      "the APC state's process", "reserved", "attach depth", "reserved")                           \
    X(0x18, "REFERENCE_BY_POINTER", "An object's reference count went below zero.", "object type", \
      "the object", "reserved", "reserved")                                                        \
    X(0x09, "IRQL_NOT_GREATER_OR_EQUAL", "KeRaiseIrql was asked to lower the IRQL.",               \
      "current IRQL", "IRQL requested", "reserved", "reserved")                                    \
    X(0x0A, "IRQL_NOT_LESS_OR_EQUAL",                                                              \
      "Kernel code touched pageable or invalid memory at DISPATCH_LEVEL or above.",                \
      "memory referenced", "IRQL at the time of the reference", "0: read, 1: write, 8: execute",   \
      "address of the instruction that referenced memory")                                         \
    X(0x1E, "KMODE_EXCEPTION_NOT_HANDLED",                                                         \
      "A kernel-mode exception was raised and no handler took it.",                                \
      "exception code that was not handled", "address where the exception occurred",               \
      "exception parameter 0", "exception parameter 1 (for 0xC0000005: the address accessed)")     \
    X(0x3F, "NO_MORE_SYSTEM_PTES",                                                                 \
      "A request for system PTEs could not be met and its caller cannot fail.",                    \
      "0: system PTE pool, 1: nonpaged pool expansion PTEs", "size of the request in pages",       \
      "total free system PTEs", "total system PTEs")                                               \
    X(0x41, "MUST_SUCCEED_POOL_EMPTY", "A must-succeed pool request could not be satisfied.",      \
      "size of the request", "pages used from nonpaged pool",                                      \
      "nonpaged requests larger than a page", "pages available")                                   \
    X(0x50, "PAGE_FAULT_IN_NONPAGED_AREA",                                                         \
      "Kernel code referenced system memory that is not valid.", "memory referenced",              \
      "0: read, 1: write", "address that referenced memory (if known)", "reserved")                \
    X(0x76, "PROCESS_HAS_LOCKED_PAGES",                                                            \
      "A process ended with pages still locked for I/O (a missing MmUnlockPages).",                \
      "0: the process is terminating; 1: an unlock of pages that were not locked",                 \
      "the process object (P1 0) or the MDL (P1 1)", "number of locked pages",                     \
      "driver stacks, or 0")                                                                       \
    X(0x1A, "MEMORY_MANAGEMENT", "The memory manager met a severe error.",                         \
      "the kind of error (0x1000: a cached page mapped noncached with bug check on failure)",      \
      "depends on P1", "depends on P1", "depends on P1")                                           \
    X(0x7F, "UNEXPECTED_KERNEL_MODE_TRAP", "The processor raised a trap the kernel cannot take.",  \
      "trap number", "reserved", "reserved", "reserved")                                           \
    X(0xC2, "BAD_POOL_CALLER", "A driver made a bad pool request (a double or wrong free).",       \
      "the kind of bad request (7: freed already, 0x42: never allocated)", "reserved",             \
      "pool header contents, or 0", "the address being freed")                                     \
    X(0xC4, "DRIVER_VERIFIER_DETECTED_VIOLATION",                                                  \
      "Driver Verifier caught a driver breaking a rule.", "the violation (subcode)",               \
      "depends on the subcode", "depends on the subcode", "depends on the subcode")                \
    X(0xD1, "DRIVER_IRQL_NOT_LESS_OR_EQUAL",                                                       \
      "A driver touched pageable or invalid memory at DISPATCH_LEVEL or above.",                   \
      "memory referenced", "IRQL at the time of the reference", "0: read, 1: write, 8: execute",   \
      "address in the driver that referenced memory")                                              \
    X(0xD8, "DRIVER_USED_EXCESSIVE_PTES",                                                          \
      "System PTEs ran out and TrackPtes shows one driver holding too many.",                      \
      "the driver's name, or 0", "PTEs used by that driver", "total free system PTEs",             \
      "total system PTEs")                                                                         \
    X(0xDA, "SYSTEM_PTE_MISUSE", "A driver used system PTEs wrongly.",                             \
      "the kind of misuse (subtype)", "depends on the subtype", "depends on the subtype",          \
      "depends on the subtype")                                                                    \
    X(0xBE, "ATTEMPTED_WRITE_TO_READONLY_MEMORY", "A driver wrote to read-only memory.",           \
      "virtual address of the write", "PTE contents", "reserved", "reserved")                      \
    X(0xE2, "MANUALLY_INITIATED_CRASH", "The crash was started on purpose.", "reserved",           \
      "reserved", "reserved", "reserved")

typedef struct bugcheck_info {
    uint32_t code;
    const char *name, *summary, *param[4];
} bugcheck_info;

#define PTL_BC_ROW(c, n, s, a, b, d, e) {c, n, s, {a, b, d, e}},
static const bugcheck_info bugchecks[] = {PTL_BUGCHECKS(PTL_BC_ROW)};
#undef PTL_BC_ROW

static const bugcheck_info *find(uint32_t code)
{
    for (size_t i = 0; i < sizeof bugchecks / sizeof bugchecks[0]; i++)
        if (bugchecks[i].code == code)
            return &bugchecks[i];
    return NULL;
}

const char *ptl_bugcheck_name(uint32_t code)
{
    const bugcheck_info *b = find(code);
    return b ? b->name : "UNKNOWN_BUGCHECK";
}

const char *ptl__bugcheck_summary(uint32_t code)
{
    const bugcheck_info *b = find(code);
    return b ? b->summary : "A bug check ptelab has no description for.";
}

/* Subtype-specific meanings of P1..P4, for the codes whose P1 selects them. */
static const struct {
    uint32_t code, sub;
    const char *param[4];
} subtypes[] = {
    {0xDA,
     0x01,
     {"0x01: the mapping being freed is a duplicate", "lock-tracking structure", "the MDL",
      "duplicate tracking structure"}},
    {0xDA,
     0x02,
     {"0x02: the wrong number of mappings is being freed", "tracking structure",
      "mappings the system expects to free", "mappings the driver asks to free"}},
    {0xDA,
     0x03,
     {"0x03: the wrong mapping address is being freed", "first tracking structure found",
      "mapping address the system expects", "address the driver passed"}},
    {0xDA,
     0x06,
     {"0x06: the MDL being unmapped is not mapped", "the MDL", "virtual address from the driver",
      "mappings to free"}},
    {0xDA,
     0x303,
     {"0x303: release of a range that was never reserved", "first mapping address",
      "mappings to release", "0"}},
    {0xDA,
     0x304,
     {"0x304: release of a range that starts inside another allocation", "first mapping address",
      "mappings to release", "0"}},
    {0xDA,
     0x305,
     {"0x305: release of the wrong number of mappings", "first mapping address",
      "mappings the caller releases", "mappings that should be released"}},
    {0xDA,
     0x306,
     {"0x306: one of the mappings being released is already free", "first mapping address",
      "the free mapping address", "mappings to release"}},
    {0xDA,
     0x100,
     {"0x100: a request to reserve 0 mappings (MmAllocateMappingAddress)",
      "number of mappings requested", "the caller's pool tag", "the caller's caller address"}},
    {0xDA,
     0x101,
     {"0x101: free of a reserved range the caller does not own (tag mismatch)",
      "first mapping address", "the caller's pool tag", "the owner's pool tag"}},
    {0xDA,
     0x102,
     {"0x102: free of a reserved range that looks empty", "first mapping address",
      "the caller's pool tag", "reserved"}},
    {0xDA,
     0x103,
     {"0x103: free of a reserved range still in use (MmUnmapReservedMapping first)",
      "address of the mapping still valid", "the caller's pool tag", "mappings in the range"}},
    {0xDA,
     0x104,
     {"0x104: MDL mapped into a reserved range the caller does not own", "first mapping address",
      "the caller's pool tag", "the owner's pool tag"}},
    {0xDA,
     0x105,
     {"0x105: MDL mapped into an invalid reserved range", "first mapping address",
      "the caller's pool tag", "reserved"}},
    {0xDA,
     0x107,
     {"0x107: MDL mapped into a reserved range that is not properly reserved",
      "first mapping address", "address of the mapping still valid", "last mapping address"}},
    {0xDA,
     0x108,
     {"0x108: unmap of a reserved range the caller does not own", "first mapping address",
      "the caller's pool tag", "the owner's pool tag"}},
    {0xDA,
     0x109,
     {"0x109: unmap of a reserved range that looks empty", "first mapping address",
      "the caller's pool tag", "reserved"}},
    {0xDA,
     0x10A,
     {"0x10A: unmap of more mappings than the reserved range holds", "first mapping address",
      "mappings in the range", "mappings to unmap"}},
    {0xDA,
     0x10B,
     {"0x10B: unmap of part of a reserved range that is not mapped", "first mapping address",
      "the caller's pool tag", "mappings to unmap"}},
    {0xDA,
     0x10C,
     {"0x10C: the caller does not unmap the whole reserved range", "first mapping address",
      "the caller's pool tag", "mappings to unmap"}},
    {0xDA,
     0x400,
     {"0x400: MmUnmapIoSpace of an address MmMapIoSpace never returned",
      "base address of the I/O-space mapping", "pages to free", "0"}},
    {0x76,
     0x00,
     {"0: the process is terminating with locked pages", "the process object",
      "number of locked pages", "driver stacks, or 0"}},
    {0x76,
     0x01,
     {"1: an unlock of pages that were not locked", "the MDL", "current number of locked pages",
      "driver stacks, or 0"}},
};

const char *ptl__bugcheck_param_doc(uint32_t code, uint64_t p1, int i)
{
    PTL_ASSERT(i >= 0 && i < 4);
    for (size_t k = 0; k < sizeof subtypes / sizeof subtypes[0]; k++)
        if (subtypes[k].code == code && subtypes[k].sub == p1)
            return subtypes[k].param[i];
    const bugcheck_info *b = find(code);
    return b ? b->param[i] : "(undocumented)";
}

void ptl_stop_print(const ptl_stop *stop, FILE *out)
{
    if (!stop || !out)
        return;
    /* the caller may have filled the struct itself: the name need not end in a NUL */
    const char *name = stop->name[0] ? stop->name : ptl_bugcheck_name(stop->code);
    int width = stop->name[0] ? (int)sizeof stop->name : (int)strlen(name);
    fprintf(out, "*** STOP: 0x%08X (0x%08llX,0x%08llX,0x%08llX,0x%08llX)\n%.*s\n", stop->code,
            (unsigned long long)stop->param[0], (unsigned long long)stop->param[1],
            (unsigned long long)stop->param[2], (unsigned long long)stop->param[3], width, name);
}

static void bugcheck_v(ptl_machine *m, uint32_t code, uint64_t p1, uint64_t p2, uint64_t p3,
                       uint64_t p4, const char *fmt, va_list ap) __attribute__((noreturn));

static void bugcheck_v(ptl_machine *m, uint32_t code, uint64_t p1, uint64_t p2, uint64_t p3,
                       uint64_t p4, const char *fmt, va_list ap)
{
    if (!m->stop.stopped) {
        m->stop.stopped = 1;
        ptl__mmu_fast_sync(m); /* no more inline register access */
        m->stop.info.code = code;
        m->stop.info.param[0] = p1 & 0xFFFFFFFFu; /* x86: ULONG_PTR parameters */
        m->stop.info.param[1] = p2 & 0xFFFFFFFFu;
        m->stop.info.param[2] = p3 & 0xFFFFFFFFu;
        m->stop.info.param[3] = p4 & 0xFFFFFFFFu;
        snprintf(m->stop.info.name, sizeof m->stop.info.name, "%s", ptl_bugcheck_name(code));
        m->stop.driver = m->kernel.current_driver;
        vsnprintf(m->stop.detail, sizeof m->stop.detail, fmt, ap);
        ptl__perf_event(m, PTL_EV_STOP, "*** STOP: 0x%08X %s%s%s", code, m->stop.info.name,
                        m->stop.detail[0] ? ": " : "", m->stop.detail);
    }
    /* Land in the innermost harness frame; a driver's try frames cannot catch a STOP. */
    ptl__frame *f = m->frames;
    while (f && f->is_try)
        f = f->prev;
    if (!f) {
        fprintf(stderr, "ptelab: bug check outside any ptl_call: the machine cannot go on\n");
        ptl_stop_print(&m->stop.info, stderr);
        if (m->stop.detail[0])
            fprintf(stderr, "(%s)\n", m->stop.detail);
        abort();
    }
    m->frames = f;
    longjmp(f->jb, 1);
}

void ptl__bugcheck(ptl_machine *m, uint32_t code, uint64_t p1, uint64_t p2, uint64_t p3,
                   uint64_t p4)
{
    ptl__bugcheck_why(m, code, p1, p2, p3, p4, "%s", "");
}

void ptl__bugcheck_why(ptl_machine *m, uint32_t code, uint64_t p1, uint64_t p2, uint64_t p3,
                       uint64_t p4, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    bugcheck_v(m, code, p1, p2, p3, p4, fmt, ap);
}

uint32_t ptl__stop_result(ptl_machine *m, ptl_stop *stop)
{
    if (!m->stop.stopped) {
        if (stop)
            memset(stop, 0, sizeof *stop);
        return 0;
    }
    if (stop)
        *stop = m->stop.info;
    return m->stop.info.code;
}

int ptl_stopped(const ptl_machine *m, ptl_stop *stop)
{
    if (!ptl__machine_ok(m) || !m->stop.stopped)
        return 0;
    if (stop)
        *stop = m->stop.info;
    return 1;
}
