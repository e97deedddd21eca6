/* verifier.h - Driver Verifier's leak checks at unload, and fault injection. See verifier.c. */
#ifndef PTELAB_VERIFIER_H
#define PTELAB_VERIFIER_H

#include <stdint.h>

typedef struct ptl__verifier {
    uint64_t attempts; /* allocations counted for fault injection */
    uint64_t injected; /* failures injected */
    uint64_t rng;
} ptl__verifier;

struct ptl_machine;
struct ptl_driver;
void ptl__verifier_init(struct ptl_machine *m);
/* 1 when this allocation of `kind` (PTL_FAULT_*) must fail. */
int ptl__verifier_inject(struct ptl_machine *m, uint32_t kind, const char *what);
/* At unload: report every resource the driver still holds; with the verifier on, stop
 * with 0xC4 subcode 0x62. Returns the number of leaks. */
uint32_t ptl__verifier_unload(struct ptl_machine *m, struct ptl_driver *d);

#endif
