/* report.h - the HTML/SVG report's helpers other files use. See report.c. */
#ifndef PTELAB_REPORT_H
#define PTELAB_REPORT_H

#include <stdio.h>

/* HTML-escape text onto f (the machine report; the planner's page uses it too). It needs
 * nothing of the machine, so tools may include this header alone. */
void ptl__html_escape(FILE *f, const char *s);

#endif
