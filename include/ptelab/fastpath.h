/* ptelab/fastpath.h - the internal ABI of the inline register accessors of wdm.h.
 *
 * Not an API: the layout may change in any release of ptelab, and nothing here is meant
 * for driver code to use directly.
 *
 * On NT READ_/WRITE_REGISTER_* are HAL macros around one instruction. ptelab serves an
 * access that hits the machine's software TLB inline as well: every machine begins with a
 * ptl__fastpath saying where its TLB is and which addresses the inline path may serve
 * (none while the machine is stopped or shares the low 4 GB with the host; only system
 * space inside a DPC, so that a DPC touching user space takes the slow path, where the
 * hazard is recorded). Everything else goes through ptl_kread/ptl_kwrite, which keep the
 * same rules. ptl__tls_machine is the thread's current machine, what ptl_current()
 * returns: the one global ptelab has.
 *
 * Invariants (src/mmu.c, ptl__mmu_check): tlb points at the machine's own TLB; every entry
 * equals what a fresh page walk gives; min_va is recomputed whenever the stop state or the
 * DPC state changes (src/kernel.c, src/stop.c).
 */
#ifndef PTELAB_FASTPATH_H
#define PTELAB_FASTPATH_H

#include <stdint.h>
#include <ptelab/ptelab.h>

#define PTL__TLB_ENTRIES 256u /* direct mapped on the low bits of the virtual page number */

typedef struct ptl__tlbe {
    uint32_t tag; /* virtual page number + 1; 0 empty */
    uint32_t pfn;
    uint8_t *host; /* host bytes of the frame */
    uint8_t writable, user, dirty, global;
} ptl__tlbe;

typedef struct ptl__fastpath {
    uint64_t min_va; /* the inline path serves [min_va, 4 GB); 4 GB: none */
    const ptl__tlbe *tlb;
} ptl__fastpath;

#ifdef __cplusplus
extern thread_local ptl_machine *ptl__tls_machine;
#else
extern _Thread_local ptl_machine *ptl__tls_machine;
#endif

#endif
