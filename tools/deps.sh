#!/bin/sh
# Make sure the Debian packages a make target needs are present.
#   tools/deps.sh PACKAGE...
# A package that is already installed costs nothing. A missing one is installed with
# apt-get when we are root; otherwise we print the one command that installs it and fail,
# so that a target never runs half-equipped.
set -eu
missing=""
for pkg in "$@"; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
        missing="$missing $pkg"
    fi
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" = 0 ]; then
    echo "deps: installing$missing" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q --no-install-recommends $missing >/dev/null 2>&1 || {
        apt-get update -q >/dev/null 2>&1
        apt-get install -y -q --no-install-recommends $missing >/dev/null
    }
    exit 0
fi
echo "deps: missing$missing; install with: sudo apt-get install -y$missing" >&2
exit 1
