/* demo.h - `ptelab demo`: the article end to end on a 64 MB NT 4.0 SP4 machine. */
#ifndef PTELAB_TOOLS_DEMO_H
#define PTELAB_TOOLS_DEMO_H

/* Runs the demo, narrating to stdout, and writes demo-report.html in the current
 * directory. Returns the process exit status (0 on success). */
int ptl_cli_demo(void);

#endif
