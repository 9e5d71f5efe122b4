#!/usr/bin/env bash
# The copy-paste check, run by `make test`: every block of fbi_llm.hpp between
#     // >>> copy-paste NAME (needs: <headers>; definitions)      and      // <<< copy-paste NAME
# compiles on its own — the standard headers and the few definitions its marker names, nothing else of the
# header, no Eigen — and gives bit for bit the results of the whole header (tests/copy_paste/use.cpp).
#   bash tests/copy_paste.sh [BUILD_DIR]      (CXX, CXXFLAGS, LDLIBS and FBI_RUN from the environment, as the
#                                              Makefile sets them; FBI_RUN runs a cross build's programs, e.g. qemu)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-build}/copy_paste
mkdir -p "$out"
CXX=${CXX:-g++}
flags="-std=c++17 -O2 -Wall -Wextra ${CXXFLAGS:-}"
alone_flags=$(sed -E 's/-isystem +[^ ]*eigen3//g; s/-I *[^ ]*eigen3//g' <<< "$flags")  # the block alone: no Eigen
eigen=${EIGEN_INC:-/usr/include/eigen3}
blocks=$(sed -n 's|^// >>> copy-paste \([a-z_0-9]*\).*|\1|p' fbi_llm.hpp)
[ -n "$blocks" ] || { echo "copy-paste: ✗ no '// >>> copy-paste' blocks in fbi_llm.hpp"; exit 1; }
passed=0; failed=0
for block in $blocks; do
  marker=$(grep -m1 "^// >>> copy-paste $block" fbi_llm.hpp)
  includes=$(sed -n 's/.*needs: *\([^;)]*\).*/\1/p' <<< "$marker")
  defs=$(sed -n 's/.*needs:[^;]*; *\([^)]*\)).*/\1/p' <<< "$marker" | tr ',' ' ')
  f=$out/$block.hpp
  {
    echo "// cut out of fbi_llm.hpp by tests/copy_paste.sh: block '$block' and what its marker names"
    for inc in $includes; do echo "#include $inc"; done
    echo "namespace fbi {"
    for d in $defs; do
      line=$(grep -m1 -E "^(constexpr|inline) [a-z0-9_ ]+ $d( =|\()" fbi_llm.hpp) ||
        { echo "copy-paste: ✗ block '$block' names '$d', which is not a one-line definition in fbi_llm.hpp" >&2; exit 1; }
      echo "$line"
    done
    awk -v b="$block" 'index($0, "// >>> copy-paste " b) == 1 {on = 1} on {print} $0 == "// <<< copy-paste " b {on = 0}' fbi_llm.hpp
    echo "}  // namespace fbi"
  } > "$f"
  ok=1
  $CXX $alone_flags -x c++ -fsyntax-only "$f" || ok=0                     # the block compiles by itself
  $CXX $alone_flags -DBLOCK_$block -DCOPY_PASTE_BLOCK="\"$block.hpp\"" -I"$out" tests/copy_paste/use.cpp \
      -o "$out/$block.alone" ${LDLIBS:-} || ok=0
  $CXX $flags -isystem "$eigen" -DWITH_HEADER -DBLOCK_$block tests/copy_paste/use.cpp -o "$out/$block.header" ${LDLIBS:-} || ok=0
  if [ $ok = 1 ] && ${FBI_RUN:-} "$out/$block.alone" > "$out/$block.alone.txt" && ${FBI_RUN:-} "$out/$block.header" > "$out/$block.header.txt" &&
     cmp -s "$out/$block.alone.txt" "$out/$block.header.txt"; then
    echo "copy-paste: ✓ $block ($(awk -v b="$block" 'index($0, "// >>> copy-paste " b) == 1 {on = 1} on {n++} $0 == "// <<< copy-paste " b {on = 0} END {print n}' fbi_llm.hpp) lines + $(wc -w <<< "$defs") named definitions) compiles alone and gives the header's results bit for bit"
    passed=$((passed + 1))
  else
    echo "copy-paste: ✗ $block: see $f and $out/$block.*.txt"
    failed=$((failed + 1))
  fi
done
echo "copy-paste: $passed passed, $failed failed"
[ $failed = 0 ]
