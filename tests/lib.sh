# Shared by the test scripts (sourced): ok/fail counters and wrap, which runs a cross build's programs.
passed=0
failed=0
ok() { echo "ok - $1"; passed=$((passed + 1)); }
fail() { echo "FAIL - $1"; [ -n "${2:-}" ] && printf '    %s\n' "$2"; failed=$((failed + 1)); }
# FBI_RUN (set by the Makefile from RUN) runs the programs of a cross build, e.g. "qemu-aarch64 -L /usr/aarch64-linux-gnu":
# the programs are then called through small wrapper scripts in $WRAP (the real binary stays at its path).
wrap() {
  if [ -z "${FBI_RUN:-}" ]; then echo "$1"; return; fi
  local w="$WRAP/${1##*/}"
  printf '#!/bin/sh\nexec %s "%s" "$@"\n' "$FBI_RUN" "$1" > "$w" && chmod +x "$w" && echo "$w"
}
