/* kernel.c - the parts of the NT kernel that driver code runs on: IRQL, calls into driver
 * code, exceptions, kernel stacks, driver images, and kernel-mode memory access.
 *
 * Calls. ptl_call runs driver code on the host thread at PASSIVE_LEVEL in a process
 * context; ptl_call_dpc at DISPATCH_LEVEL in whatever context is current (a DPC "runs in
 * an arbitrary process context", the article). Each pushes a harness frame: a bug check
 * unwinds to it (stop.c).
 *
 * Exceptions. MmProbeAndLockPages and friends raise; the driver catches with PTL_TRY /
 * PTL_EXCEPT (<ptelab/wdm.h>). A raise lands in the innermost try frame of the current
 * call; with none, it is KMODE_EXCEPTION_NOT_HANDLED (0x1E: P1 the code, P2 the address,
 * P3/P4 the exception parameters; learn.microsoft.com "Bug Check 0x1E").
 *
 * Kernel-mode faults (ptl__kaccess), as NT's trap handler treats them:
 *   - at DISPATCH_LEVEL or above, any fault is IRQL_NOT_LESS_OR_EQUAL, or
 *     DRIVER_IRQL_NOT_LESS_OR_EQUAL (0xD1) when a driver made the access (NT decides by
 *     the faulting instruction's module); paging is impossible there, so even memory
 *     that could be brought in is fatal;
 *   - at PASSIVE/APC level, a system address that is not valid is
 *     PAGE_FAULT_IN_NONPAGED_AREA (0x50: P1 address, P2 0 read / 1 write, P3 the
 *     instruction address); a user address is resolved if the process has it
 *     (demand zero, page file) and otherwise raises STATUS_ACCESS_VIOLATION.
 * Instruction addresses: ptelab runs host code, so it reports the driver's image base +
 * 0x1000 (or the kernel's for code outside any driver). docs/fidelity.md says so.
 *
 * Threads. Each thread's kernel stack is a run of 4 system PTEs: a guard page (never
 * valid) and 12 KB of stack (KERNEL_STACK_SIZE; ReactOS procsup.c reserves stack pages +
 * 1). Exited threads' stacks are cached, still mapped, up to 5 (MmMaximumDeadKernelStacks
 * as ReactOS sets it) and reused first. A thread is a record, not a host thread: a
 * scenario can keep thousands alive, and only their stacks cost.
 *
 * Driver images take one system PTE per page of the image (ReactOS sysldr.c).
 *
 * Invariants (ptl__kernel_check): IRQL is PASSIVE outside calls; every live thread's
 * stack run is a STACK run of 4 PTEs with the guard invalid and 3 valid pages; every
 * loaded driver's image run is an IMAGE run of its size; cached dead stacks likewise; the
 * driver list is load order and by_id[id - 1] is its id-th entry.
 */
#include "internal.h"

#include <ptelab/wdm.h>

#include <string.h>
#include <strings.h>

#define STACK_RUN_PTES (PTL_KERNEL_STACK_PAGES + 1u)
#define KERNEL_IP      0x80401000u /* notional: inside ntoskrnl */

void ptl__kernel_init(ptl_machine *m)
{
    memset(&m->kernel, 0, sizeof m->kernel);
    m->kernel.next_tid = 0x10;
}

void ptl__kernel_free(ptl_machine *m)
{
    for (ptl_driver *d = m->kernel.drivers, *n; d; d = n) {
        n = d->next;
        d->magic = 0;
        free(d);
    }
    for (ptl_thread *t = m->kernel.threads, *n; t; t = n) {
        n = t->next;
        t->magic = 0;
        free(t);
    }
    for (ptl_thread *t = m->kernel.exited_threads, *n; t; t = n) {
        n = t->next;
        t->magic = 0;
        free(t);
    }
    free(m->kernel.by_id);
    memset(&m->kernel, 0, sizeof m->kernel);
}

ptl_driver *ptl__driver_by_id(ptl_machine *m, uint32_t id)
{
    /* an array, not a walk of the list: snapshots and MDL calls ask once per entry */
    return id && id <= m->kernel.ndrivers ? m->kernel.by_id[id - 1] : NULL;
}

uint32_t ptl__kernel_ip(ptl_machine *m)
{
    ptl_driver *d = ptl__driver_by_id(m, m->kernel.current_driver);
    return d ? d->base_va + 0x1000u : KERNEL_IP;
}

/* ---- frames, calls ----------------------------------------------------------------- */

bool ptl__enter(ptl_machine *m, ptl__frame *f)
{
    f->prev = m->frames;
    f->is_try = 0;
    f->exception = 0;
    f->saved_irql = m->kernel.irql;
    f->machine = m;
    m->frames = f;
    return !m->stop.stopped;
}

void ptl__leave(ptl_machine *m, ptl__frame *f)
{
    /* Try frames a driver left behind (a `return` out of a PTL_TRY body) die here. */
    if (m->frames != f) {
        ptl__frame *x = m->frames;
        while (x && x != f)
            x = x->prev;
        PTL_ASSERT(x == f); /* frames are strictly nested */
        ptl__perf_event(m, PTL_EV_MISUSE,
                        "driver code left a PTL_TRY block without "
                        "PTL_EXCEPT (a return or goto out of the body)");
    }
    m->frames = f->prev;
}

static bool call_args_ok(ptl_machine *m, ptl_process *p, ptl_driver *d, void (*fn)(void *))
{
    if (!ptl__machine_ok(m))
        return false;
    if (!fn) {
        ptl__fail("ptl_call: no function to call");
        return false;
    }
    if (p && (!ptl__process_ok(p) || p->m != m)) {
        if (p->magic == PTL__PROCESS_MAGIC && p->m != m)
            ptl__fail("ptl_call: process %s belongs to another machine", p->name);
        return false;
    }
    if (d && (d->magic != PTL__DRIVER_MAGIC || d->m != m || d->unloaded)) {
        ptl__fail("ptl_call: the driver handle is not a loaded driver of this machine");
        return false;
    }
    return true;
}

static uint32_t run_call(ptl_machine *m, ptl_process *p, ptl_driver *d, void (*fn)(void *),
                         void *arg, ptl_stop *stop, int dpc)
{
    ptl_machine *const prev_machine = ptl_current();
    const int prev_irql = m->kernel.irql, prev_dpc = m->kernel.in_dpc;
    const uint32_t prev_driver = m->kernel.current_driver;
    ptl__frame f;
    if (ptl__enter(m, &f) && setjmp(f.jb) == 0) {
        ptl__set_current(m);
        m->kernel.current_driver = d ? d->id : 0;
        m->kernel.in_dpc = dpc;
        ptl__mmu_fast_sync(m);
        if (dpc) {
            m->kernel.irql = 2; /* DISPATCH_LEVEL, in the context that ran last */
        } else {
            m->kernel.irql = 0; /* PASSIVE_LEVEL */
            ptl__process_switch(m, p ? p : m->procs.system);
        }
        fn(arg);
        if (m->kernel.irql != (dpc ? 2 : 0))
            ptl__perf_event(m, PTL_EV_MISUSE, "driver code returned at IRQL %d, entered at %d",
                            m->kernel.irql, dpc ? 2 : 0);
    }
    ptl__leave(m, &f);
    m->kernel.irql = prev_irql;
    m->kernel.in_dpc = prev_dpc;
    ptl__mmu_fast_sync(m);
    m->kernel.current_driver = prev_driver;
    ptl__set_current(prev_machine);
    return ptl__stop_result(m, stop);
}

uint32_t ptl_call(ptl_machine *m, ptl_process *p, ptl_driver *d, void (*fn)(void *), void *arg,
                  ptl_stop *stop)
{
    if (!call_args_ok(m, p, d, fn))
        return PTL_CALL_REFUSED;
    ptl__perf_tick(m);
    return run_call(m, p, d, fn, arg, stop, 0);
}

uint32_t ptl_call_dpc(ptl_machine *m, ptl_driver *d, void (*fn)(void *), void *arg, ptl_stop *stop)
{
    if (!call_args_ok(m, NULL, d, fn))
        return PTL_CALL_REFUSED;
    ptl__perf_tick(m);
    return run_call(m, NULL, d, fn, arg, stop, 1);
}

/* ---- exceptions -------------------------------------------------------------------- */

void ptl__raise(ptl_machine *m, int32_t status, uint32_t info0, uint32_t info1)
{
    ptl__frame *f = m->frames;
    if (!f || f->is_try != 1) /* a harness frame or a system thread's start: unhandled */
        ptl__bugcheck_why(m, 0x1E, (uint32_t)status, ptl__kernel_ip(m), info0, info1,
                          "exception 0x%08X raised in kernel mode with no handler",
                          (uint32_t)status);
    m->frames = f->prev;
    f->exception = status;
    m->kernel.exception_code = status;
    m->kernel.irql = f->saved_irql; /* unwinding restores the IRQL of the try */
    longjmp(f->jb, 1);
}

static ptl_machine *try_machine(const char *what)
{
    ptl_machine *m = ptl_current();
    if (!m) {
        fprintf(stderr, "ptelab: %s used outside driver code run by ptl_call\n", what);
        abort();
    }
    return m;
}

ptl_frame *ptl_try_push(ptl_frame *f)
{
    ptl_machine *m = try_machine("PTL_TRY");
    f->prev = m->frames;
    f->is_try = 1;
    f->exception = 0;
    f->saved_irql = m->kernel.irql;
    f->machine = m;
    m->frames = f;
    return f;
}

void ptl_try_pop(ptl_frame *f)
{
    ptl_machine *m = f->machine;
    PTL_ASSERT(m->frames == f);
    m->frames = f->prev;
}

int ptl_try_filter(ptl_frame *f, int filter)
{
    ptl_machine *m = f->machine;
    if (filter == 0) /* EXCEPTION_CONTINUE_SEARCH: on to the next handler out */
        ptl__raise(m, f->exception, 0, 0);
    if (filter < 0)
        ptl__perf_event(m, PTL_EV_MISUSE,
                        "EXCEPTION_CONTINUE_EXECUTION cannot resume here; ran the handler");
    return 1;
}

int32_t ptl_exception_code(void)
{
    return try_machine("GetExceptionCode")->kernel.exception_code;
}

void ptl_raise_status(int32_t status)
{
    ptl__raise(try_machine("ExRaiseStatus"), status, 0, 0);
}

/* ---- kernel-mode access ------------------------------------------------------------ */

void ptl__kfault(ptl_machine *m, int write)
{
    uint32_t va = m->mmu.fault_va;
    int irql = m->kernel.irql;
    if (irql >= 2) {
        uint32_t code = m->kernel.current_driver ? 0xD1 : 0x0A;
        ptl__bugcheck_why(m, code, va, (uint32_t)irql, (uint32_t)write, ptl__kernel_ip(m),
                          "%s of %08x at IRQL %d%s", write ? "write" : "read", va, irql,
                          va < m->pte.system_start ? ": a user address in an arbitrary "
                                                     "process context"
                                                   : "");
    }
    if (va >= m->pte.system_start) {
        if (m->mmu.fault == PTL_FAULT_PROTECTION && write && m->cfg.profile >= PTL_WIN2000)
            ptl__bugcheck_why(m, 0xBE, va, m->mmu.fault_pte, 0, 0, "write to read-only %08x", va);
        ptl__bugcheck_why(m, 0x50, va, (uint32_t)write, ptl__kernel_ip(m), 0,
                          "%s of system address %08x, whose PTE %08x is not valid",
                          write ? "write" : "read", va, m->mmu.fault_pte);
    }
    ptl__raise(m, (int32_t)0xC0000005, (uint32_t)write, va);
}

void ptl__kaccess(ptl_machine *m, uint32_t va, void *buf, size_t n, int write)
{
    if (n == 0)
        return;
    if (ptl__mmu_copy(m, va, buf, n, write, 0, m->kernel.irql < 2) != PTL_FAULT_NONE)
        ptl__kfault(m, write);
    if (m->kernel.in_dpc && va < m->pte.system_start)
        ptl__perf_event(m, PTL_EV_HAZARD,
                        "a DPC %s user address %08x in the context of %s (whatever ran last)",
                        write ? "wrote" : "read", va, m->procs.current->name);
}

void ptl__kfill(ptl_machine *m, uint32_t va, int value, size_t n)
{
    if (n == 0)
        return;
    if (ptl__mmu_fill(m, va, value, n, 0, m->kernel.irql < 2) != PTL_FAULT_NONE)
        ptl__kfault(m, 1);
}

/* ---- threads ----------------------------------------------------------------------- */

static uint32_t stack_create(ptl_machine *m)
{
    if (m->kernel.ndead)
        return m->kernel.dead_stacks[--m->kernel.ndead];
    uint32_t va = ptl__syspte_reserve(m, PTL_SYSTEM_PTE_SPACE, STACK_RUN_PTES, PTL_KIND_STACK, 0);
    if (!va)
        return 0;
    for (uint32_t i = 1; i < STACK_RUN_PTES; i++) {
        uint32_t pfn = ptl__phys_alloc(&m->phys, PTL_USE_KERNEL_STACK, 0);
        if (pfn == UINT32_MAX) {
            for (uint32_t k = 1; k < i; k++) {
                uint32_t pte;
                ptl__pte_read(m, 0, va + k * PTL_PAGE_SIZE, &pte);
                ptl__pte_write(m, 0, va + k * PTL_PAGE_SIZE, 0);
                ptl__phys_release(&m->phys, pte >> PTL_PAGE_SHIFT);
            }
            ptl__syspte_release(m, PTL_SYSTEM_PTE_SPACE, va, STACK_RUN_PTES);
            return 0;
        }
        ptl__pte_write(m, 0, va + i * PTL_PAGE_SIZE, ptl__pte_make(pfn, 1, 0, 1));
    }
    return va;
}

static void stack_delete(ptl_machine *m, uint32_t va)
{
    if (m->kernel.ndead < PTL_DEAD_STACKS_MAX) {
        m->kernel.dead_stacks[m->kernel.ndead++] = va;
        return;
    }
    for (uint32_t i = 1; i < STACK_RUN_PTES; i++) {
        uint32_t pte = 0;
        ptl__pte_read(m, 0, va + i * PTL_PAGE_SIZE, &pte);
        ptl__pte_write(m, 0, va + i * PTL_PAGE_SIZE, 0);
        ptl__phys_release(&m->phys, pte >> PTL_PAGE_SHIFT);
    }
    PTL_ASSERT(ptl__syspte_release(m, PTL_SYSTEM_PTE_SPACE, va, STACK_RUN_PTES) == PTL_RELEASE_OK);
}

ptl_thread *ptl_thread_create(ptl_machine *m, ptl_process *p)
{
    if (!ptl__machine_ok(m))
        return NULL;
    if (m->stop.stopped) {
        ptl__fail("the machine is stopped (0x%08X); no thread can be created", m->stop.info.code);
        return NULL;
    }
    if (p && (!ptl__process_ok(p) || p->m != m)) {
        ptl__fail("ptl_thread_create: not a live process of this machine");
        return NULL;
    }
    if (!p)
        p = m->procs.system;
    ptl__perf_tick(m);
    uint32_t va = stack_create(m);
    if (!va) {
        ptl__spool_stats st;
        ptl__sysptes_stats(m, PTL_SYSTEM_PTE_SPACE, &st);
        m->kernel.threads_failed++;
        ptl__perf_event(m, PTL_EV_FAIL,
                        "thread creation in %s failed: STATUS_INSUFFICIENT_RESOURCES (no kernel "
                        "stack: %u free system PTEs, largest run %u)",
                        p->name, st.free, st.largest);
        ptl__fail("STATUS_INSUFFICIENT_RESOURCES: no kernel stack for a new thread in %s: it "
                  "needs %u contiguous system PTEs%s; %u are free, the largest run is %u",
                  p->name, STACK_RUN_PTES,
                  st.free >= STACK_RUN_PTES ? " (the pool is fragmented)" : "", st.free,
                  st.largest);
        return NULL;
    }
    ptl_thread *t = ptl__xcalloc(1, sizeof *t);
    t->magic = PTL__THREAD_MAGIC;
    t->m = m;
    t->process = p;
    t->tid = m->kernel.next_tid;
    m->kernel.next_tid += 4;
    t->stack_run_va = va;
    t->next = m->kernel.threads;
    m->kernel.threads = t;
    m->kernel.live_threads++;
    p->threads++;
    ptl__perf_event(m, PTL_EV_THREAD, "thread 0x%x created in %s, stack %08x-%08x", t->tid, p->name,
                    va + PTL_PAGE_SIZE, va + STACK_RUN_PTES * PTL_PAGE_SIZE);
    return t;
}

static void thread_end(ptl_machine *m, ptl_thread *t)
{
    stack_delete(m, t->stack_run_va);
    t->stack_run_va = 0;
    t->terminated = 1;
    t->process->threads--;
    m->kernel.live_threads--;
}

/* End t if it still runs and take it off the live list. */
static void thread_retire(ptl_machine *m, ptl_thread *t)
{
    if (!t->terminated && !m->stop.stopped) {
        ptl__perf_tick(m);
        thread_end(m, t);
        ptl__perf_event(m, PTL_EV_THREAD, "thread 0x%x exited", t->tid);
    }
    for (ptl_thread **pp = &m->kernel.threads; *pp; pp = &(*pp)->next) {
        if (*pp == t) {
            *pp = t->next;
            break;
        }
    }
}

void ptl_thread_exit(ptl_thread *t)
{
    if (!t || t->magic != PTL__THREAD_MAGIC) {
        ptl__fail("ptl_thread_exit: not a thread handle");
        return;
    }
    if (t->exited) {
        ptl__fail("ptl_thread_exit: thread 0x%x has exited already", t->tid);
        return;
    }
    ptl_machine *m = t->m;
    if (!ptl__machine_ok(m))
        return;
    thread_retire(m, t);
    /* The record stays until shutdown, so that the caller's handle can still be checked
     * (a second exit is refused, not a use after free); it costs one small record per
     * thread the harness created. */
    t->exited = 1;
    t->next = m->kernel.exited_threads;
    m->kernel.exited_threads = t;
}

void ptl__kernel_process_exit(ptl_machine *m, ptl_process *p)
{
    for (ptl_thread *t = m->kernel.threads; t; t = t->next)
        if (t->process == p && !t->terminated)
            thread_end(m, t);
}

/* ---- drivers ----------------------------------------------------------------------- */

static void image_free(ptl_machine *m, uint32_t va, uint32_t pages)
{
    for (uint32_t i = 0; i < pages; i++) {
        uint32_t pte = 0;
        ptl__pte_read(m, 0, va + i * PTL_PAGE_SIZE, &pte);
        if (pte & PTL_PTE_VALID) {
            ptl__pte_write(m, 0, va + i * PTL_PAGE_SIZE, 0);
            ptl__phys_release(&m->phys, pte >> PTL_PAGE_SHIFT);
        }
    }
    PTL_ASSERT(ptl__syspte_release(m, PTL_SYSTEM_PTE_SPACE, va, pages) == PTL_RELEASE_OK);
}

/* The driver's name as an x86 UNICODE_STRING at image base + 0x100, the string after it:
 * what DRIVER_USED_EXCESSIVE_PTES's P1 points at (learn.microsoft.com, "Bug Check 0xD8"). */
static void write_name(ptl_machine *m, uint32_t base, const char *name)
{
    uint8_t buf[0x100];
    size_t n = strlen(name);
    memset(buf, 0, sizeof buf);
    uint16_t len = (uint16_t)(n * 2), max = (uint16_t)(n * 2 + 2);
    uint32_t str = base + 0x108;
    memcpy(buf, &len, 2);
    memcpy(buf + 2, &max, 2);
    memcpy(buf + 4, &str, 4);
    for (size_t i = 0; i < n && 8 + 2 * i + 1 < sizeof buf; i++)
        buf[8 + 2 * i] = (uint8_t)name[i];
    PTL_ASSERT(ptl__mmu_copy(m, base + 0x100, buf, sizeof buf, 1, 0, 0) == PTL_FAULT_NONE);
}

static ptl_driver *image_load(ptl_machine *m, const char *name, uint32_t image_bytes, int dll)
{
    if (!name || !name[0] || strlen(name) >= sizeof(((ptl_driver *)0)->name)) {
        ptl__fail("a driver needs a name of 1 to 31 characters");
        return NULL;
    }
    if (image_bytes == 0 || image_bytes > 256u * 1024 * 1024) {
        ptl__fail("driver %s: an image of %u bytes is not loadable", name, image_bytes);
        return NULL;
    }
    ptl__perf_tick(m);
    uint32_t pages = (image_bytes + PTL_PAGE_MASK) / PTL_PAGE_SIZE;
    uint32_t id = m->kernel.ndrivers + 1;
    uint32_t va = ptl__syspte_reserve(m, PTL_SYSTEM_PTE_SPACE, pages, PTL_KIND_IMAGE, id);
    if (!va) {
        ptl__spool_stats st;
        ptl__sysptes_stats(m, PTL_SYSTEM_PTE_SPACE, &st);
        ptl__perf_event(m, PTL_EV_FAIL,
                        "%s %s did not load: no run of %u system PTEs "
                        "(%u free, largest %u)",
                        dll ? "DLL" : "driver", name, pages, st.free, st.largest);
        ptl__fail("STATUS_INSUFFICIENT_RESOURCES: %s needs %u contiguous system PTEs; "
                  "%u are free, the largest run is %u",
                  name, pages, st.free, st.largest);
        return NULL;
    }
    for (uint32_t i = 0; i < pages; i++) {
        uint32_t pfn = ptl__phys_alloc(&m->phys, PTL_USE_DRIVER_IMAGE, 0);
        if (pfn == UINT32_MAX) {
            image_free(m, va, pages);
            ptl__fail("driver %s: no RAM for its %u image pages", name, pages);
            return NULL;
        }
        ptl__pte_write(m, 0, va + i * PTL_PAGE_SIZE, ptl__pte_make(pfn, 1, 0, 1));
    }
    write_name(m, va, name);
    ptl_driver *d = ptl__xcalloc(1, sizeof *d);
    d->magic = PTL__DRIVER_MAGIC;
    d->m = m;
    d->id = id;
    d->is_dll = dll;
    snprintf(d->name, sizeof d->name, "%s", name);
    d->base_va = va;
    d->image_pages = pages;
    ptl_driver **pp = m->kernel.ndrivers ? &m->kernel.by_id[m->kernel.ndrivers - 1]->next
                                         : &m->kernel.drivers; /* the list's tail */
    *pp = d;
    if (m->kernel.ndrivers == m->kernel.by_id_cap) {
        m->kernel.by_id_cap = m->kernel.by_id_cap ? 2 * m->kernel.by_id_cap : 16;
        m->kernel.by_id =
            ptl__xrealloc(m->kernel.by_id, m->kernel.by_id_cap * sizeof *m->kernel.by_id);
    }
    m->kernel.by_id[m->kernel.ndrivers++] = d;
    ptl__perf_event(m, PTL_EV_DRIVER, "%s %s loaded at %08x (%u pages)", dll ? "DLL" : "driver",
                    name, va, pages);
    return d;
}

ptl_driver *ptl_driver_load(ptl_machine *m, const char *name, uint32_t image_bytes)
{
    if (!ptl__machine_ok(m))
        return NULL;
    if (m->stop.stopped) {
        ptl__fail("the machine is stopped (0x%08X); no driver can load", m->stop.info.code);
        return NULL;
    }
    return image_load(m, name, image_bytes, 0);
}

int ptl_driver_import(ptl_driver *d, const char *dll, uint32_t image_bytes)
{
    if (!d || d->magic != PTL__DRIVER_MAGIC || d->unloaded || d->is_dll)
        return ptl__fail("ptl_driver_import: not a loaded driver");
    ptl_machine *m = d->m;
    if (m->stop.stopped)
        return ptl__fail("the machine is stopped (0x%08X)", m->stop.info.code);
    if (d->nimports == sizeof d->imports / sizeof d->imports[0])
        return ptl__fail("driver %s: too many imports", d->name);
    ptl_driver *lib = NULL;
    for (ptl_driver *x = m->kernel.drivers; x; x = x->next)
        if (x->is_dll && !x->unloaded && dll && strcasecmp(x->name, dll) == 0)
            lib = x;
    for (uint32_t i = 0; lib && i < d->nimports; i++)
        if (d->imports[i] == lib->id)
            return 0; /* imported already */
    if (!lib && !(lib = image_load(m, dll, image_bytes, 1)))
        return -1;
    lib->importers++;
    d->imports[d->nimports++] = lib->id;
    return 0;
}

uint32_t ptl_driver_unload(ptl_driver *d, ptl_stop *stop)
{
    if (!d || d->magic != PTL__DRIVER_MAGIC) {
        ptl__fail("ptl_driver_unload: not a driver handle");
        return 0;
    }
    ptl_machine *m = d->m;
    if (!ptl__machine_ok(m))
        return 0;
    if (d->unloaded) {
        ptl__fail("driver %s is already unloaded", d->name);
        return ptl__stop_result(m, stop);
    }
    ptl__frame f;
    if (ptl__enter(m, &f) && setjmp(f.jb) == 0) {
        ptl__perf_tick(m);
        ptl__verifier_unload(m, d); /* reports leaks; stops under the verifier */
        image_free(m, d->base_va, d->image_pages);
        d->unloaded = 1;
        ptl__perf_event(m, PTL_EV_DRIVER, "driver %s unloaded", d->name);
        for (uint32_t i = 0; i < d->nimports; i++) {
            ptl_driver *lib = ptl__driver_by_id(m, d->imports[i]);
            if (lib && !lib->unloaded && --lib->importers == 0) {
                image_free(m, lib->base_va, lib->image_pages);
                lib->unloaded = 1;
                ptl__perf_event(m, PTL_EV_DRIVER, "DLL %s unloaded (no importer left)", lib->name);
            }
        }
    }
    ptl__leave(m, &f);
    return ptl__stop_result(m, stop);
}

const char *ptl_driver_name(const ptl_driver *d)
{
    return d && d->magic == PTL__DRIVER_MAGIC ? d->name : NULL;
}

uint32_t ptl_driver_base(const ptl_driver *d)
{
    return d && d->magic == PTL__DRIVER_MAGIC ? d->base_va : 0;
}

int ptl__kernel_check(ptl_machine *m, FILE *why)
{
    if (m->call_depth == 0 && m->frames == NULL && m->kernel.irql != 0) {
        fprintf(why, "kernel: IRQL is %d outside any call\n", m->kernel.irql);
        return -1;
    }
    for (ptl_thread *t = m->kernel.threads; t; t = t->next) {
        if (t->terminated)
            continue;
        uint32_t start, count;
        ptl__pte_kind kind;
        if (!ptl__syspte_run_at(m, t->stack_run_va, NULL, &start, &count, &kind, NULL) ||
            start != t->stack_run_va || count != STACK_RUN_PTES || kind != PTL_KIND_STACK) {
            fprintf(why, "kernel: thread 0x%x's stack run at %08x is not a stack run\n", t->tid,
                    t->stack_run_va);
            return -1;
        }
        uint32_t pte;
        ptl__pte_read(m, 0, start, &pte);
        if (pte & PTL_PTE_VALID) {
            fprintf(why, "kernel: thread 0x%x's guard page is valid\n", t->tid);
            return -1;
        }
    }
    uint32_t listed = 0;
    for (ptl_driver *d = m->kernel.drivers; d; d = d->next, listed++)
        if (listed >= m->kernel.ndrivers || m->kernel.by_id[listed] != d || d->id != listed + 1) {
            fprintf(why, "kernel: driver %s is not at its id's place\n", d->name);
            return -1;
        }
    if (listed != m->kernel.ndrivers) {
        fprintf(why, "kernel: %u drivers listed, %u counted\n", listed, m->kernel.ndrivers);
        return -1;
    }
    for (ptl_driver *d = m->kernel.drivers; d; d = d->next) {
        if (d->unloaded)
            continue;
        uint32_t start, count;
        ptl__pte_kind kind;
        if (!ptl__syspte_run_at(m, d->base_va, NULL, &start, &count, &kind, NULL) ||
            start != d->base_va || count != d->image_pages || kind != PTL_KIND_IMAGE) {
            fprintf(why, "kernel: driver %s's image run at %08x is wrong\n", d->name, d->base_va);
            return -1;
        }
    }
    return 0;
}

ptl_driver *ptl_driver_at(const ptl_machine *m, uint32_t index)
{
    if (!ptl__machine_ok(m))
        return NULL;
    return index < m->kernel.ndrivers ? m->kernel.by_id[index] : NULL;
}

int ptl_driver_loaded(const ptl_driver *d)
{
    return d && d->magic == PTL__DRIVER_MAGIC && !d->unloaded;
}

/* ---- PsCreateSystemThread / PsTerminateSystemThread ------------------------------------
 * A system thread takes its kernel stack from system PTEs like any thread; when none can
 * be had, creation fails with STATUS_INSUFFICIENT_RESOURCES (the article: "threads not
 * being created"). ptelab runs the start routine at once, to completion, at PASSIVE_LEVEL
 * in the thread's process, as if the new thread ran before its creator resumed; the
 * thread ends when the routine calls PsTerminateSystemThread or returns (docs/fidelity.md).
 * Threads that must stay alive in numbers are ptl_thread_create's. */

#define THREAD_FRAME 2 /* a frame that PsTerminateSystemThread lands in */

NTSTATUS PsCreateSystemThread(PHANDLE ThreadHandle, ULONG DesiredAccess,
                              POBJECT_ATTRIBUTES ObjectAttributes, HANDLE ProcessHandle,
                              PCLIENT_ID ClientId, PKSTART_ROUTINE StartRoutine, PVOID StartContext)
{
    ptl_machine *m = ptl__driver_context("PsCreateSystemThread");
    (void)DesiredAccess;
    if (!ThreadHandle || !StartRoutine)
        return STATUS_INVALID_PARAMETER;
    if (m->kernel.irql != PASSIVE_LEVEL)
        ptl__bugcheck_why(m, 0x0A, 0, (uint32_t)m->kernel.irql, 0, ptl__kernel_ip(m),
                          "PsCreateSystemThread at IRQL %d", m->kernel.irql);
    ptl_process *owner = m->procs.system;
    if (ProcessHandle == NtCurrentProcess())
        owner = m->procs.current;
    else if (ProcessHandle)
        return STATUS_INVALID_HANDLE; /* ptelab: only NULL (System) or the current process */
    ptl_thread *t = ptl_thread_create(m, owner);
    if (!t)
        return STATUS_INSUFFICIENT_RESOURCES;
    int kernel = ObjectAttributes && (ObjectAttributes->Attributes & OBJ_KERNEL_HANDLE);
    *ThreadHandle = ptl__thread_handle(m, t->tid, kernel);
    if (ClientId) {
        ClientId->UniqueProcess = owner->nt.UniqueProcessId;
        ClientId->UniqueThread = (HANDLE)(uintptr_t)t->tid;
    }
    /* run the thread: its process, PASSIVE_LEVEL, until it returns or terminates */
    ptl_process *const creator = m->procs.current;
    const int irql = m->kernel.irql;
    ptl__frame f;
    f.prev = m->frames;
    f.is_try = THREAD_FRAME;
    f.exception = 0;
    f.saved_irql = irql;
    f.machine = m;
    m->frames = &f;
    if (setjmp(f.jb) == 0) {
        ptl__process_switch(m, owner);
        StartRoutine(StartContext);
    }
    m->frames = f.prev;
    m->kernel.irql = irql;
    if (!creator->exited)
        ptl__process_switch(m, creator);
    thread_retire(m, t); /* no handle to it left the DDI: free it now */
    t->magic = 0;
    free(t);
    return STATUS_SUCCESS;
}

NTSTATUS PsTerminateSystemThread(NTSTATUS ExitStatus)
{
    ptl_machine *m = ptl_current();
    if (!m) {
        fprintf(stderr, "ptelab: PsTerminateSystemThread called outside driver code\n");
        abort();
    }
    ptl__frame *f = m->frames;
    while (f && f->is_try == 1)
        f = f->prev;
    if (!f || f->is_try != THREAD_FRAME) {
        ptl__perf_event(m, PTL_EV_MISUSE,
                        "PsTerminateSystemThread(0x%08X) outside a system thread: ignored",
                        (uint32_t)ExitStatus);
        return STATUS_INVALID_PARAMETER;
    }
    m->frames = f;
    longjmp(f->jb, 1);
}
