/* hal.c - the HAL's view of buses: which buses exist and how a bus-relative address
 * becomes a physical address the processor can map.
 *
 * NT behaviour followed (learn.microsoft.com, "HalTranslateBusAddress"): the caller gives
 * the interface type, bus number and bus-relative address, and *AddressSpace 0 for memory
 * or 1 for I/O ports; the HAL returns TRUE with the translated address and the address
 * space the processor must use (on x86, memory stays memory and ports stay ports), or
 * FALSE when it cannot translate. On x86 PC HALs the translation is the identity; a bus
 * here may carry an offset (as bridges on other platforms do) so that a driver that skips
 * the translation step gets the wrong address, which is the point of the article's first
 * step.
 *
 * ptelab's choice (docs/fidelity.md): a memory-space address translates only when the
 * result is decoded by something: RAM or an adapter aperture registered on that bus. An
 * I/O-space address translates when it is a 16-bit port. A bus that was never registered
 * does not translate.
 *
 * Invariant: (type, number) pairs are unique.
 */
#include "internal.h"

#include <string.h>

static const char *const bus_names[] = {
    "Internal",
    "Isa",
    "Eisa",
    "MicroChannel",
    "TurboChannel",
    "PCIBus",
    "VMEBus",
    "NuBus",
    "PCMCIABus",
    "CBus",
    "MPIBus",
    "MPSABus",
    "ProcessorInternal",
    "InternalPowerBus",
    "PNPISABus",
    "PNPBus",
    "Vmcs",
    "ACPIBus",
};

const char *ptl__bus_name(int type)
{
    if (type >= 0 && type < (int)(sizeof bus_names / sizeof bus_names[0]))
        return bus_names[type];
    return "Undefined";
}

void ptl__hal_init(ptl__hal *h)
{
    memset(h, 0, sizeof *h);
    /* A PC of the period: the processor-internal bus, ISA behind the PCI bridge, PCI 0. */
    ptl__hal_add_bus(h, Internal, 0, 0, 0);
    ptl__hal_add_bus(h, Isa, 0, 0, 0);
    ptl__hal_add_bus(h, PCIBus, 0, 0, 0);
}

void ptl__hal_free(ptl__hal *h)
{
    free(h->buses);
    memset(h, 0, sizeof *h);
}

const ptl__bus *ptl__hal_bus(const ptl__hal *h, int type, uint32_t number)
{
    for (int i = 0; i < h->nbuses; i++)
        if (h->buses[i].type == type && h->buses[i].number == number)
            return &h->buses[i];
    return NULL;
}

int ptl__hal_add_bus(ptl__hal *h, int type, uint32_t number, uint64_t translation, int io_space)
{
    if (type < 0 || type >= MaximumInterfaceType)
        return ptl__fail("bus type %d is not an INTERFACE_TYPE", type);
    if (ptl__hal_bus(h, type, number))
        return ptl__fail("bus %s %u exists already", ptl__bus_name(type), number);
    h->buses = ptl__xrealloc(h->buses, (size_t)(h->nbuses + 1) * sizeof *h->buses);
    h->buses[h->nbuses++] = (ptl__bus){type, number, translation, io_space};
    return 0;
}

int ptl__hal_translate(ptl_machine *m, int type, uint32_t number, uint64_t bus_address,
                       uint32_t *address_space, uint64_t *translated)
{
    const ptl__bus *b = ptl__hal_bus(&m->hal, type, number);
    if (!b || !address_space || !translated)
        return 0;
    if (*address_space == 1) {
        if (bus_address > 0xFFFF)
            return 0;
        *translated = bus_address;
        return 1;
    }
    if (*address_space != 0)
        return 0;
    uint64_t pa = bus_address + b->translation;
    if (pa < bus_address) /* wrapped */
        return 0;
    const ptl__aperture *ap = ptl__phys_aperture_of(&m->phys, pa);
    int decoded =
        ap ? (ap->bus == type && ap->bus_number == number) : ptl__phys_is_ram(&m->phys, pa);
    if (!decoded)
        return 0;
    *translated = pa;
    *address_space = b->io_space ? 1u : 0u;
    return 1;
}

int ptl__hal_check(const ptl__hal *h, FILE *why)
{
    for (int i = 0; i < h->nbuses; i++)
        for (int j = 0; j < i; j++)
            if (h->buses[i].type == h->buses[j].type && h->buses[i].number == h->buses[j].number) {
                fprintf(why, "hal: bus %s %u is registered twice\n",
                        ptl__bus_name(h->buses[i].type), h->buses[i].number);
                return -1;
            }
    return 0;
}
