#!/bin/sh
# Replays the worked examples of docs/attribution.md.
#
#   docs/examples/run.sh                 print the output of every example
#   docs/examples/run.sh payout retention
#                                        print the output of the named examples
#   docs/examples/run.sh --check [NAME…] compare with docs/examples/expected/NAME.out.jsonl
#   docs/examples/run.sh --update [NAME…] rewrite the expected files
#
# The binary is $ATTRIB if set, else `attrib` on PATH, else the release build in the cargo
# target directory (./target, or $CARGO_TARGET_DIR).
# `processed_at` (the wall clock) is printed as "…" so that outputs compare byte for byte.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
bin=${ATTRIB:-$(command -v attrib || echo "${CARGO_TARGET_DIR:-$here/../../target}/release/attrib")}
mode=print
case "${1:-}" in --check) mode=check; shift ;; --update) mode=update; shift ;; esac
if [ $# -eq 0 ]; then set -- $(cd "$here" && ls *.jsonl | sed 's/\.jsonl$//'); fi
# An example with a settings file beside it (NAME.toml, e.g. identity stitching on) is replayed
# with `--config NAME.toml`.
replay() {
  set -- "$1" "$here/$1.jsonl"
  if [ -f "$here/$1.toml" ]; then set -- "$@" --config "$here/$1.toml"; fi
  shift
  "$bin" replay "$@" 2>/dev/null | sed 's/"processed_at":"[^"]*"/"processed_at":"…"/'
}
failed=0
for name in "$@"; do
  case $mode in
    print) echo "== $name"; replay "$name" ;;
    update) mkdir -p "$here/expected"; replay "$name" > "$here/expected/$name.out.jsonl" ;;
    check)
      if replay "$name" | diff -u "$here/expected/$name.out.jsonl" - >/dev/null; then
        echo "ok      $name"
      else
        echo "DIFFERS $name"; failed=1
      fi ;;
  esac
done
exit $failed
