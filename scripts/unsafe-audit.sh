#!/usr/bin/env bash
# unsafe-audit.sh: count and check every use of `unsafe` in the repository's Rust code.
#
#   bash scripts/unsafe-audit.sh            audit; exit 1 on any problem
#   bash scripts/unsafe-audit.sh --update   rewrite scripts/unsafe-baseline.txt from the tree, then audit
#   bash scripts/unsafe-audit.sh --root DIR audit another tree (DIR/scripts/unsafe-baseline.txt)
#
# Every `.rs` file (outside `target` and `.git` directories) is scanned with comments, string
# literals and char literals blanked out, so only real code is counted. Per file it counts
#   blocks  `unsafe { .. }` blocks (also `unsafe extern` blocks and `#[unsafe(..)]` attributes)
#   fns     `unsafe fn` and `unsafe trait` declarations (not `unsafe fn(..)` pointer types)
#   impls   `unsafe impl`
#   SAFETY: lines with a `// SAFETY:` comment
# and fails when
#   (a) `unsafe` appears anywhere outside `sys/` (src/, tests/, benches/, examples/, fuzz/, ...),
#       or `allow(unsafe_code)` does (the text `forbid(unsafe_code)` / `deny(unsafe_code)` is fine);
#   (b) in sys/, an unsafe block or `unsafe impl` has no line containing `SAFETY:` on its own line,
#       within the 3 lines above it, or in the comment block directly above it; or an
#       `unsafe fn`/`unsafe trait` has no `# Safety` section in its doc comment (an `unsafe fn`
#       in an `impl Trait for Type` block is exempt: the trait's declaration carries the section);
#   (c) a file's blocks/fns/impls count is above its line in the baseline
#       (scripts/unsafe-baseline.txt, `path blocks fns impls`), or a file with unsafe has no line.
# A count below the baseline is reported but does not fail: run --update to lock it in.
#
# Plain bash + POSIX awk (and `delete array`, which every common awk has); tested with mawk.

set -euo pipefail
export LC_ALL=C

usage() {
    sed -n '2,6p' "$0" | sed 's/^# \{0,1\}//'
}

update=0
root=""
while [ "$#" -gt 0 ]; do
    case "$1" in
        --update) update=1 ;;
        --root)
            [ "$#" -ge 2 ] || { usage >&2; exit 2; }
            root="$2"
            shift
            ;;
        -h | --help) usage; exit 0 ;;
        *) echo "unsafe-audit: unknown argument: $1" >&2; usage >&2; exit 2 ;;
    esac
    shift
done
if [ -z "$root" ]; then
    root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
fi
cd "$root"
baseline="scripts/unsafe-baseline.txt"

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

# Every .rs file, sorted, paths relative to the root.
find . \( -name target -o -name 'target-*' -o -name .git \) -prune -o -type f -name '*.rs' -print \
    | sed 's|^\./||' | sort >"$tmp/files"

# ---------------------------------------------------------------------------------------------
# Stage 1: scan. Emits tab-separated records:
#   F path nlines safety_comments       one per file
#   U path line kind                    one per `unsafe` (kind: block fn impl trait fnptr attr extern other)
#   V path line message                 a rule (a)/(b) violation
# ---------------------------------------------------------------------------------------------
scan_awk='
function reset_file() {
    n = 0; state = 0; depth = 0; hashes = 0; sp = 0; hdr = ""
    delete raw; delete code; delete ctx; delete stk
}

# Track `{ }` nesting over the code of one line, remembering for each open block whether it is
# the body of a trait impl (`impl .. for .. {`): an `unsafe fn` there implements a trait method
# whose `# Safety` section lives on the trait.
function track(s,    c) {
    while (match(s, /[{};]/)) {
        hdr = hdr substr(s, 1, RSTART - 1); c = substr(s, RSTART, 1); s = substr(s, RSTART + 1)
        if (c == "{") {
            sp++
            stk[sp] = (hdr ~ /(^|[^A-Za-z0-9_])impl([^A-Za-z0-9_]|$)/ && hdr ~ /[ \t)>]for[ \t]/) ? "trait-impl" : "block"
        } else if (c == "}") {
            if (sp > 0) sp--
        }
        hdr = ""
    }
    hdr = hdr s " "
}

# Blank comments, strings and char literals of line s, carrying multi-line state in
# `state` (0 code, 1 block comment, 2 string, 3 raw string) across lines of one file.
function strip(s,    out, i, len, c, two, rest, k) {
    if (state == 0 && s !~ /["\047\/]/ && s !~ /r#/) return s
    out = ""; i = 1; len = length(s)
    while (i <= len) {
        c = substr(s, i, 1)
        if (state == 1) {                       # block comment, nested
            two = substr(s, i, 2)
            if (two == "*/") { depth--; i += 2; out = out "  "; if (depth == 0) state = 0; continue }
            if (two == "/*") { depth++; i += 2; out = out "  "; continue }
            out = out " "; i++; continue
        }
        if (state == 2) {                       # "string", escapes
            if (c == "\\") { out = out "  "; i += 2; continue }
            if (c == "\"") { out = out c; i++; state = 0; continue }
            out = out " "; i++; continue
        }
        if (state == 3) {                       # r#"raw string"#
            if (c == "\"" && substr(s, i + 1, hashes) == hashstr) {
                out = out c; for (k = 0; k < hashes; k++) out = out " "
                i += 1 + hashes; state = 0; continue
            }
            out = out " "; i++; continue
        }
        two = substr(s, i, 2)
        if (two == "//") break                  # line comment (incl. doc comments)
        if (two == "/*") { state = 1; depth = 1; out = out "  "; i += 2; continue }
        if (c == "\"") { state = 2; out = out c; i++; continue }
        if (c ~ /[bcr]/ && (i == 1 || substr(s, i - 1, 1) !~ /[A-Za-z0-9_]/)) {
            rest = substr(s, i)
            if (match(rest, /^[bc]?r#*"/)) {    # raw string start
                hashes = RLENGTH - 2 - (substr(rest, 1, 1) != "r")
                hashstr = ""; for (k = 0; k < hashes; k++) hashstr = hashstr "#"
                state = 3; out = out substr(rest, 1, RLENGTH); i += RLENGTH; continue
            }
            if (match(rest, /^r#[A-Za-z_]/)) {  # raw identifier r#name: never a keyword
                out = out "r_"; i += 2; continue
            }
        }
        if (c == "\047") {                      # char literal, or a lifetime
            rest = substr(s, i)
            if (match(rest, /^\047\\.[^\047]*\047/) || match(rest, /^\047[^\047\\]\047/) \
                || match(rest, /^\047[\200-\377]+\047/)) {
                out = out c; for (k = 2; k < RLENGTH; k++) out = out " "; out = out c
                i += RLENGTH; continue
            }
        }
        out = out c; i++
    }
    return out
}

function violation(ln, msg) { printf "V\t%s\t%d\t%s\n", file, ln, msg }

# Does a SAFETY: comment cover line ln: on it, within the 3 lines above, or anywhere in the
# run of comment lines directly above it?
function has_safety(ln,    j) {
    for (j = ln; j >= ln - 3 && j >= 1; j--) if (raw[j] ~ /SAFETY:/) return 1
    for (j = ln - 1; j >= 1 && raw[j] ~ /^[ \t]*\/\//; j--) if (raw[j] ~ /SAFETY:/) return 1
    return 0
}

# Does the doc comment of the item declared on line ln have a `# Safety` section? Walks up over
# doc comments, comments, blank lines and attributes until the end of the previous item.
function has_safety_doc(ln,    j, r) {
    for (j = ln - 1; j >= 1 && j > ln - 300; j--) {
        r = raw[j]
        if (r ~ /^[ \t]*(\/\/\/|\/\*\*|\*|#\[doc)/ && r ~ /#[ \t]*Safety/) return 1
        if (r ~ /^[ \t]*\/\//) continue
        if (code[j] ~ /^[ \t]*$/) continue
        if (code[j] ~ /[;{}][ \t]*$/) return 0
    }
    return 0
}

function classify(after, ln,    nxt) {
    if (after ~ /^[ \t]*$/) {                   # `unsafe` ends the line: look at the next one
        nxt = (ln < n) ? code[ln + 1] : ""
        return (nxt ~ /^[ \t]*\{/) ? "block" : "other"
    }
    if (after ~ /^[ \t]*\{/) return "block"
    if (after ~ /^[ \t]*\(/) return "attr"
    if (after ~ /^[ \t]+impl([^A-Za-z0-9_]|$)/) return "impl"
    if (after ~ /^[ \t]+trait([^A-Za-z0-9_]|$)/) return "trait"
    if (after ~ /^[ \t]+(extern[ \t]*("[^"]*"[ \t]*)?)?fn[ \t]+[A-Za-z_]/) return "fn"
    if (after ~ /^[ \t]+(extern[ \t]*("[^"]*"[ \t]*)?)?fn[ \t]*\(/) return "fnptr"
    if (after ~ /^[ \t]+extern([^A-Za-z0-9_]|$)/) return "extern"
    return "other"
}

function finish(    ln, rest, off, kind, safety, in_sys, p) {
    if (file == "") return
    in_sys = (file ~ /^sys\//)
    safety = 0
    for (ln = 1; ln <= n; ln++) {
        # A SAFETY comment: a `//` comment whose text starts with `SAFETY:` (after code or alone).
        if (substr(raw[ln], length(code[ln]) + 1) ~ /^\/\/[ \t]*SAFETY:/) safety++
        if (!in_sys && code[ln] ~ /allow[ \t]*\([^)]*unsafe_code/)
            violation(ln, "(a) allow(unsafe_code) outside sys/: only spargio-sys may opt in to unsafe code")
        rest = code[ln]
        while (match(rest, /(^|[^A-Za-z0-9_])unsafe([^A-Za-z0-9_]|$)/)) {
            # RSTART points at the char before `unsafe` unless the match is at the line start.
            off = (substr(rest, RSTART, 6) == "unsafe") ? RSTART : RSTART + 1
            kind = classify(substr(rest, off + 6), ln)
            printf "U\t%s\t%d\t%s\n", file, ln, kind
            if (!in_sys) {
                violation(ln, "(a) `unsafe` outside sys/: only spargio-sys may contain unsafe code (" kind ")")
            } else if (kind == "fn" || kind == "trait") {
                if (!(kind == "fn" && ctx[ln] == "trait-impl") && !has_safety_doc(ln))
                    violation(ln, "(b) `unsafe " kind "` without a `# Safety` section in its doc comment")
            } else if (kind != "fnptr") {
                if (!has_safety(ln))
                    violation(ln, "(b) unsafe " kind " without a `// SAFETY:` comment on it or in the 3 lines above")
            }
            rest = substr(rest, off + 6)
        }
    }
    printf "F\t%s\t%d\t%d\n", file, n, safety
}

FNR == 1 { finish(); reset_file(); file = FILENAME; sub(/^\.\//, "", file) }
{ n++; raw[n] = $0; code[n] = strip($0); ctx[n] = (sp > 0) ? stk[sp] : "file"; track(code[n]) }
END { finish() }
'

# ---------------------------------------------------------------------------------------------
# Stage 2: report. Reads the baseline, then the scan records; prints the table and every
# problem; writes the new baseline when asked. Exit status 1 when there is any problem.
# ---------------------------------------------------------------------------------------------
report_awk='
BEGIN { FS = "\t"; nfiles = 0; nprob = 0 }
FILENAME == basefile {
    if ($0 ~ /^[ \t]*(#|$)/) next
    split($0, fld, /[ \t]+/)
    bl[fld[1]] = 1; bb[fld[1]] = fld[2] + 0; bf[fld[1]] = fld[3] + 0; bi[fld[1]] = fld[4] + 0
    next
}
$1 == "F" { nfiles++; order[nfiles] = $2; lines[$2] = $3; saf[$2] = $4; next }
$1 == "U" {
    k = $4
    if (k == "block" || k == "attr" || k == "extern" || k == "other") blocks[$2]++
    else if (k == "fn" || k == "trait") fns[$2]++
    else if (k == "impl") impls[$2]++
    else fnptr[$2]++
    next
}
$1 == "V" { prob[++nprob] = $2 ":" $3 ": " $4; next }
END {
    if (update) delete bl
    w = 4
    for (i = 1; i <= nfiles; i++) {
        p = order[i]
        if (blocks[p] + fns[p] + impls[p] + fnptr[p] + saf[p] > 0 && length(p) > w) w = length(p)
    }
    dash = ""; for (i = 0; i < w + 2; i++) dash = dash "-"
    printf "| %-" w "s | blocks | fns | impls | total | SAFETY: | baseline (b/f/i) |\n", "file"
    printf "|%s|-------:|----:|------:|------:|--------:|------------------|\n", dash
    nunsafe = 0; notes = 0
    for (i = 1; i <= nfiles; i++) {
        p = order[i]
        b = blocks[p] + 0; f = fns[p] + 0; m = impls[p] + 0; t = b + f + m
        tb += b; tf += f; ti += m; ts += saf[p]
        if (t > 0) nunsafe++
        if (update) {
            if (t > 0) {
                newbase = newbase sprintf("%s %d %d %d\n", p, b, f, m)
                bl[p] = 1; bb[p] = b; bf[p] = f; bi[p] = m
            }
        }
        if (t + saf[p] + fnptr[p] == 0 && !(p in bl)) continue
        bstr = (p in bl && bl[p]) ? sprintf("%d/%d/%d", bb[p], bf[p], bi[p]) : "-"
        printf "| %-" w "s | %6d | %3d | %5d | %5d | %7d | %-16s |\n", p, b, f, m, t, saf[p], bstr
        if (t > 0 && p ~ /^sys\//) {
            if (!(p in bl) || !bl[p]) {
                prob[++nprob] = p ": (c) has unsafe code (" b "/" f "/" m ") but no line in " base
            } else if (b > bb[p] || f > bf[p] || m > bi[p]) {
                prob[++nprob] = sprintf("%s: (c) unsafe count grew: blocks/fns/impls %d/%d/%d > baseline %d/%d/%d", \
                    p, b, f, m, bb[p], bf[p], bi[p])
            }
        }
        if (p in bl && bl[p] && (b < bb[p] || f < bf[p] || m < bi[p]))
            note[++notes] = sprintf("%s: unsafe count fell to %d/%d/%d (baseline %d/%d/%d); run --update to lock it in", \
                p, b, f, m, bb[p], bf[p], bi[p])
        seen[p] = 1
    }
    printf "| %-" w "s | %6d | %3d | %5d | %5d | %7d | %-16s |\n", "TOTAL", tb, tf, ti, tb + tf + ti, ts, ""
    printf "%d .rs files scanned, %d with unsafe code\n", nfiles, nunsafe
    for (p in bl) if (bl[p] && !(p in seen))
        note[++notes] = p ": in the baseline but has no unsafe code any more (or is gone); run --update"
    for (i = 1; i <= notes; i++) print "note: " note[i]
    if (update) {
        printf "# unsafe-audit baseline: path blocks fns impls. Regenerate with scripts/unsafe-audit.sh --update.\n" > newfile
        printf "%s", newbase > newfile
        close(newfile)
        print "wrote " base
    }
    if (nprob > 0) {
        print ""
        for (i = 1; i <= nprob; i++) print "unsafe-audit: " prob[i]
        printf "unsafe-audit: FAILED: %d problem(s)\n", nprob
        exit 1
    }
    print "unsafe-audit: OK"
}
'

if [ -s "$tmp/files" ]; then
    # xargs would be an extra tool; the file list is short enough for one awk call.
    mapfile -t files <"$tmp/files"
    awk "$scan_awk" "${files[@]}" >"$tmp/records"
else
    : >"$tmp/records"
fi

if [ -f "$baseline" ]; then base_in="$baseline"; else base_in="$tmp/empty-baseline"; : >"$base_in"; fi
status=0
awk -v basefile="$base_in" -v base="$baseline" -v update="$update" -v newfile="$tmp/new-baseline" \
    "$report_awk" "$base_in" "$tmp/records" || status=$?
if [ "$update" = 1 ]; then
    mkdir -p "$(dirname "$baseline")"
    cp "$tmp/new-baseline" "$baseline"
fi
exit "$status"
