/* kd_repl.h - the `ptelab kd` session: WinDbg-style commands on a machine, from -c or a
 * prompt. See kd_repl.c. */
#ifndef PTELAB_KD_REPL_H
#define PTELAB_KD_REPL_H

#include <ptelab/ptelab.h>

/* Run kd commands on m.
 *   commands != NULL: "cmd; cmd" as windbg -c takes it, each echoed as "kd> cmd" before
 *     its output;
 *   commands == NULL and stdin a terminal: an interactive "kd> " prompt (line editing and
 *     history with libedit when built with it);
 *   commands == NULL and stdin not a terminal: one command line per input line (';'
 *     separates commands there too), no prompt and no echo.
 * `q` ends the session. Returns 0, or 1 when a command failed (except interactively). */
int ptl_cli_kd_session(ptl_machine *m, const char *commands);

#endif
