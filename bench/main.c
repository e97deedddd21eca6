/* main.c - ptelab-bench: the same table as `ptelab bench` (bench.c), built on its own by
 * `make bench` in a Release (-O2) tree. */
#include "bench.h"

int main(int argc, char **argv)
{
    return ptl_bench_main(argc, argv);
}
