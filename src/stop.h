/* stop.h - bug checks. See stop.c. */
#ifndef PTELAB_STOP_H
#define PTELAB_STOP_H

#include <stdint.h>
#include <ptelab/ptelab.h>

typedef struct ptl__stopstate {
    int stopped;
    ptl_stop info;
    uint32_t driver;  /* driver id + 1 blamed for it, 0 none */
    char detail[256]; /* ptelab's one-line explanation of the cause */
} ptl__stopstate;

struct ptl_machine;
/* KeBugCheckEx: freeze the machine and unwind to the innermost harness frame (ptl_call
 * and friends). Without one, print the STOP screen and abort. Never returns. */
void ptl__bugcheck(struct ptl_machine *m, uint32_t code, uint64_t p1, uint64_t p2, uint64_t p3,
                   uint64_t p4) __attribute__((noreturn));
/* Same, with a ptelab explanation kept for kd's !analyze and the report. */
void ptl__bugcheck_why(struct ptl_machine *m, uint32_t code, uint64_t p1, uint64_t p2, uint64_t p3,
                       uint64_t p4, const char *fmt, ...)
    __attribute__((noreturn, format(printf, 7, 8)));
/* Copy the STOP (if any) into *stop; returns its code or 0. */
uint32_t ptl__stop_result(struct ptl_machine *m, ptl_stop *stop);
/* Explanation of parameter i (0..3) of a bug check, for !analyze -v. */
const char *ptl__bugcheck_param_doc(uint32_t code, uint64_t p1, int i);
const char *ptl__bugcheck_summary(uint32_t code);

#endif
