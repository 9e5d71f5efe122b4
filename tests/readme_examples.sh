#!/usr/bin/env bash
# Every C++ example in README.md that starts with `#include "fbi_llm.hpp"` (adding your own kernel, adding your own
# quantizer) appears word for word, after that line, in a test under tests/, so the README shows code that
# compiles and is checked. Run by `make test`. Exit 1 naming the example that no test holds.
set -uo pipefail
cd "$(dirname "$0")/.."
bad=0; n=0; block=""; in=0; first=""
check() {
  n=$((n + 1))
  for f in tests/*.cpp; do
    content=$(<"$f")
    if [[ "$content" == *"$block"* ]]; then echo "  README example $n ($first…) is in $f"; return; fi
  done
  echo "readme: ✗ README example $n ($first…) is in no test under tests/ word for word"; bad=1
}
while IFS= read -r line; do
  if [ $in = 0 ] && [ "$line" = '```cpp' ]; then in=1; block=""; first=""; continue; fi
  if [ $in = 1 ]; then
    if [ -z "$first" ]; then
      if [ "$line" = '#include "fbi_llm.hpp"' ]; then first=next; continue; else in=0; continue; fi
    fi
    if [ "$line" = '```' ]; then in=0; first=$(head -n1 <<< "$block"); block=${block%$'\n'}; check; continue; fi
    block+="$line"$'\n'
  fi
done < README.md
[ $n -gt 0 ] || { echo "readme: ✗ no C++ example starting with #include \"fbi_llm.hpp\" found"; exit 1; }
[ $bad = 0 ] && echo "readme: ✓ $n C++ examples, each held word for word by a test"
exit $bad
