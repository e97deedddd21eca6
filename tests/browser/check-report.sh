#!/bin/sh
# check-report.sh - the report of `ptelab demo`, rendered by a real browser.
#
#   tests/browser/check-report.sh PTELAB_BINARY [SOURCE_DIR]
#
# Runs `ptelab demo` in a temporary directory, checks that demo-report.html is one
# self-contained file (no script, no http:// or https:// reference), then has headless
# Chromium (Debian's chromium package) render it at 1280x800:
#   - a screenshot, which must exist and be more than 10 KB;
#   - --dump-dom of a copy of the report with a probe <script> added: the probe writes the
#     bounding boxes of #timeline, #layout and every #fragmap-N, and counts of the
#     elements the charts need, into the DOM, and this script checks them.
# The report itself needs no script; the probe is only in the copy.
#
# Chromium missing and not installable (tools/deps.sh: apt-get as root, else it prints the
# command): prints the apt-get command and exits 77, CTest's skip code.
# PTELAB_REPORT_KEEP=DIR keeps the report, the screenshot and the probe's output in DIR.
set -eu

fail() {
    echo "check-report: FAIL: $*" >&2
    exit 1
}

[ $# -ge 1 ] || { echo "usage: $0 PTELAB_BINARY [SOURCE_DIR]" >&2; exit 2; }
case "$1" in
/*) bin=$1 ;;
*) bin=$(pwd)/$1 ;;
esac
[ -x "$bin" ] || fail "no executable at $bin"
here=$(cd "$(dirname "$0")" && pwd)
src=${2:-$(cd "$here/../.." && pwd)}

find_chromium() {
    for c in chromium chromium-browser; do
        if command -v "$c" >/dev/null 2>&1; then
            command -v "$c"
            return 0
        fi
    done
    return 1
}

chromium=$(find_chromium) || {
    sh "$src/tools/deps.sh" chromium >&2 || true
    chromium=$(find_chromium) || {
        echo "check-report: SKIP: chromium is not installed; install it with:" >&2
        echo "sudo apt-get install -y chromium"
        exit 77
    }
}

work=$(mktemp -d)
profile=$(mktemp -d)
trap 'rm -rf "$work" "$profile"' EXIT INT TERM

# ---- the demo and the file itself --------------------------------------------------------
(cd "$work" && "$bin" demo >demo.out 2>demo.err) || {
    cat "$work/demo.err" >&2
    fail "ptelab demo failed"
}
report=$work/demo-report.html
[ -s "$report" ] || fail "ptelab demo wrote no demo-report.html"
grep -qi '<script' "$report" && fail "the report contains a <script>"
grep -Eqi 'https?://' "$report" && fail "the report refers to the network (http:// or https://)"
for id in timeline layout fragmap-0 fragmap-1 fragmap-2; do
    grep -q "id=\"$id\"" "$report" || fail "the report has no id=\"$id\""
done

# ---- render ------------------------------------------------------------------------------
run_chromium() {
    timeout 120 "$chromium" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
        --disable-background-networking --disable-component-update --disable-sync \
        --user-data-dir="$profile" --window-size=1280,800 "$@" 2>>"$work/chromium.err"
}

shot=$work/screenshot.png
run_chromium --screenshot="$shot" "file://$report" >/dev/null ||
    { cat "$work/chromium.err" >&2; fail "chromium could not take the screenshot"; }
[ -f "$shot" ] || fail "no screenshot written"
size=$(wc -c <"$shot")
[ "$size" -gt 10240 ] || fail "the screenshot is only $size bytes: a blank page?"

# A copy of the report with a probe that writes layout facts into the DOM.
probe=$work/probe.html
cat >"$work/probe.js" <<'PROBE'
<script>
(function () {
  var out = [];
  function box(el, name) {
    var r = el.getBoundingClientRect();
    out.push("BOX " + name + " " + Math.round(r.width) + " " + Math.round(r.height));
  }
  function count(name, sel) {
    out.push("COUNT " + name + " " + document.querySelectorAll(sel).length);
  }
  ["timeline", "layout"].forEach(function (id) {
    var el = document.getElementById(id);
    if (el) box(el, id); else out.push("MISSING " + id);
  });
  var maps = document.querySelectorAll("svg[id^=fragmap-]");
  out.push("COUNT fragmaps " + maps.length);
  for (var i = 0; i < maps.length; i++) {
    box(maps[i], maps[i].id);
    out.push("COUNT " + maps[i].id + "-rects " + maps[i].querySelectorAll("rect").length);
  }
  count("timeline-polyline", "#timeline polyline");
  count("timeline-legend", "#timeline .legend");
  count("timeline-fail-markers", "#timeline .fail");
  count("timeline-stop", "#timeline .stop");
  count("layout-rects", "#layout rect");
  count("layout-labels", "#layout text");
  count("fragmap-legend", "ul.legend li");
  count("driver-rows", "#drivers tr");
  count("stop-screen", "#stop-screen");
  count("event-rows", "#events tr");
  out.push("DOCWIDTH " + document.documentElement.scrollWidth);
  var pre = document.createElement("pre");
  pre.id = "ptelab-probe";
  pre.textContent = "PROBE-" + "BEGIN\n" + out.join("\n") + "\nPROBE-" + "END";
  document.body.appendChild(pre);
})();
</script>
PROBE
awk -v js="$work/probe.js" '
    /<\/body>/ && !done { while ((getline l < js) > 0) print l; done = 1 }
    { print }' "$report" >"$probe"
grep -q 'ptelab-probe' "$probe" || fail "could not add the probe to the copy"
run_chromium --dump-dom "file://$probe" >"$work/dom.html" ||
    { cat "$work/chromium.err" >&2; fail "chromium could not dump the DOM"; }
sed -n '/PROBE-BEGIN/,/PROBE-END/p' "$work/dom.html" | grep -v PROBE >"$work/probe.txt"
[ -s "$work/probe.txt" ] || fail "the probe wrote nothing (did the page load?)"
cat "$work/probe.txt"

if [ -n "${PTELAB_REPORT_KEEP:-}" ]; then
    mkdir -p "$PTELAB_REPORT_KEEP"
    cp "$report" "$shot" "$work/probe.txt" "$work/demo.out" "$PTELAB_REPORT_KEEP/"
fi

# ---- check what the probe saw ------------------------------------------------------------
grep -q '^MISSING' "$work/probe.txt" && fail "an SVG chart is missing"
awk '
    $1 == "BOX" && ($3 + 0 <= 0 || $4 + 0 <= 0) { print "empty box: " $2; bad = 1 }
    $1 == "BOX" && $2 == "timeline" && $3 + 0 < 600 { print "timeline too narrow: " $3; bad = 1 }
    $1 == "COUNT" { c[$2] = $3 + 0 }
    $1 == "DOCWIDTH" && $2 + 0 > 1280 { print "the page scrolls sideways at 1280: " $2; bad = 1 }
    END {
        need["fragmaps"] = 3; need["timeline-polyline"] = 1; need["timeline-legend"] = 1;
        need["timeline-fail-markers"] = 1; need["timeline-stop"] = 1; need["layout-rects"] = 10;
        need["layout-labels"] = 10; need["fragmap-legend"] = 9; need["driver-rows"] = 3;
        need["stop-screen"] = 1; need["event-rows"] = 100;
        need["fragmap-0-rects"] = 3; need["fragmap-2-rects"] = 100;
        for (k in need)
            if (!(k in c) || c[k] < need[k]) { print k ": " c[k] + 0 " < " need[k]; bad = 1 }
        exit bad
    }' "$work/probe.txt" || fail "the rendered report is incomplete (see above)"
echo "check-report: ok (screenshot $size bytes)"
