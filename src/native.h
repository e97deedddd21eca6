/* native.h - native mode: emulated addresses are host addresses. See native.c. */
#ifndef PTELAB_NATIVE_H
#define PTELAB_NATIVE_H

#include <stdint.h>

typedef struct ptl__native {
    int on;              /* this machine mirrors its page tables into the host */
    uint32_t *shadow;    /* per VA page: frame + 1 that the host page maps, 0 none, or
                            UINT32_MAX: a frame nothing decodes (the all-ones pages) */
    int ones_fd;         /* a memfd of ONES_PAGES pages of 0xFF, mapped read-only there */
    uint8_t *writable;   /* per VA page: mapped writable */
    uint64_t mirror_ops; /* host mapping calls made */
    uint64_t faults;     /* SIGSEGVs turned into NT outcomes */
} ptl__native;

struct ptl_machine;
/* Try to turn native mode on for m at boot; 0 on, -1 off (reason in *why). */
int ptl__native_start(struct ptl_machine *m, const char **why);
void ptl__native_stop(struct ptl_machine *m);
/* The PTE (or, with is_pde, the PDE at index va >> 22) for va changed. */
void ptl__native_pte(struct ptl_machine *m, uint32_t pd, uint32_t va, uint32_t pte);
/* The same for n PTEs from va: first, first + step, ... (ptl__pte_write_run). */
void ptl__native_pte_run(struct ptl_machine *m, uint32_t pd, uint32_t va, uint32_t n,
                         uint32_t first, uint32_t step);
void ptl__native_pde(struct ptl_machine *m, uint32_t pd, uint32_t index, uint32_t pde);
/* CR3 changed: swap the user half and the per-process part of the self-map. */
void ptl__native_switch(struct ptl_machine *m, uint32_t new_pd);
/* Redo the whole mirror from the page tables (what decodes changed: an adapter arrived). */
void ptl__native_resync(struct ptl_machine *m);
int ptl__native_check(struct ptl_machine *m, FILE *why);

#endif
