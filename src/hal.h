/* hal.h - buses and bus-address translation (HalTranslateBusAddress). See hal.c. */
#ifndef PTELAB_HAL_H
#define PTELAB_HAL_H

#include <stdint.h>
#include <stdio.h>

typedef struct ptl__bus {
    int type; /* INTERFACE_TYPE */
    uint32_t number;
    uint64_t translation; /* added to a memory-space bus address */
    int io_space;         /* memory-space addresses on this bus translate to I/O space */
} ptl__bus;

typedef struct ptl__hal {
    ptl__bus *buses;
    int nbuses;
} ptl__hal;

void ptl__hal_init(ptl__hal *h);
void ptl__hal_free(ptl__hal *h);
const ptl__bus *ptl__hal_bus(const ptl__hal *h, int type, uint32_t number);
int ptl__hal_add_bus(ptl__hal *h, int type, uint32_t number, uint64_t translation, int io_space);
const char *ptl__bus_name(int type);
/* (type, number) pairs are unique (hal.c); 0 or -1 with the reason. */
int ptl__hal_check(const ptl__hal *h, FILE *why);
struct ptl_machine;
/* HalTranslateBusAddress: 1 with the translated address and space set, or 0. */
int ptl__hal_translate(struct ptl_machine *m, int type, uint32_t number, uint64_t bus_address,
                       uint32_t *address_space, uint64_t *translated);

#endif
