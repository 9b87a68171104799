#!/usr/bin/env bash
# Prints which modules each file of src/ imports (`crate::...` paths, in
# `use` lines and inline) and checks that imports run one way:
#
#   3 I/O types   fs io net native native_any boundary sync time(sleep, interval, timeout)
#   2 scheduler   shard runtime msg mail fd_lease blocking time/wheel
#   2 driver      driver/*            (must not import the scheduler)
#   1 base        task stats wire error
#
# A file may import its own layer or a lower one. Exit status 1 on an
# upward import. Usage: bash scripts/layers.sh [--quiet]
set -euo pipefail
cd "$(dirname "$0")/.."

layer_of() {
  case "$1" in
    task|stats|wire|error) echo 1 ;;
    driver) echo 2d ;;
    shard|runtime|msg|mail|fd_lease|blocking|time/wheel) echo 2 ;;
    lib) echo 0 ;;
    *) echo 3 ;;
  esac
}
rank() { case "$1" in 1) echo 1 ;; 2d) echo 2 ;; 2) echo 2 ;; 3) echo 3 ;; *) echo 9 ;; esac; }

# The module a file is, as `layer_of` names it.
module_of() {
  local f=${1#src/}
  f=${f%.rs}
  case "$f" in
    driver/*) echo driver ;;
    time/wheel) echo time/wheel ;;
    */*|*/mod) echo "${f%%/*}" ;;
    *) echo "$f" ;;
  esac
}

# Modules named by `crate::` paths in a file (braced groups expanded).
imports_of() {
  perl -0777 -ne '
    s{//[^\n]*}{}g;                       # comments (doc links are not imports)
    while (/crate::\{([^}]*)\}/g) { for (split /,/, $1) { s/^\s+//; /^([a-z_]+)(::([a-z_]+))?/ and print "$1".(defined $3 && $1 eq "time" ? "/$3" : "")."\n"; } }
    while (/crate::([a-z_]+)(::([a-z_]+))?/g) { print "$1".(defined $3 && $1 eq "time" ? "/$3" : "")."\n"; }
  ' "$1" | sed -E 's#^time/(sleep|interval|timeout|[A-Z].*)$#time#; s#^time/[a-z_]+$#&#' | sort -u
}

status=0
quiet=${1:-}
for f in $(find src -name '*.rs' | sort); do
  me=$(module_of "$f")
  mine=$(layer_of "$me")
  deps=""
  for d in $(imports_of "$f"); do
    [ "$d" = "$me" ] && continue
    case "$d" in time/wheel|time) ;; *) d=${d%%/*} ;; esac
    # Names re-exported at the root (JoinHandle, RuntimeError, …) are not modules.
    [ -e "src/$d.rs" ] || [ -d "src/$d" ] || [ "$d" = time/wheel ] || continue
    theirs=$(layer_of "$d")
    mark=""
    if [ "$(rank "$theirs")" -gt "$(rank "$mine")" ] || { [ "$mine" = 2d ] && [ "$theirs" = 2 ]; }; then
      mark="!"
      status=1
    fi
    deps="$deps $d$mark"
  done
  [ -z "$quiet" ] && printf '%-24s [%s]%s\n' "$f" "$mine" "$deps"
done
if [ "$status" = 0 ]; then
  echo "layers: every import runs downward (or within its layer)"
else
  echo "layers: upward imports marked with !" >&2
fi
exit "$status"
