#!/usr/bin/env bash
# Every equation label cited as [X] (e.g. [F5], [Q2]) in the header, the examples, the tests, the notebooks
# and the README is defined in a METHOD NOTES block: the header's, or a plug-in's under examples/ (b1.58 and
# DB-LLM define their own labels); and nothing cites a document outside the repository.
# Run by `make test`. Exit 1 with the offending file:line on the first kind of failure found.
set -uo pipefail
cd "$(dirname "$0")/.."
label='\[[A-Z][0-9]\]'
notes() { awk '/^\/\/ METHOD NOTES/ {on = 1} /^\/\/ EQUATION MAP/ {on = 0} on' "$@"; }
[ -n "$(notes fbi_llm.hpp | grep -o "$label")" ] || { echo "labels: ✗ no METHOD NOTES block with [X] labels in fbi_llm.hpp"; exit 1; }
defined=$(notes fbi_llm.hpp examples/*/*.hpp | grep -o "$label" | sort -u)
files=$(git ls-files 'fbi_llm.hpp' 'examples/*' 'tests/*' 'notebooks/*.ipynb' 'README.md' 'Makefile' 2>/dev/null ||
        ls fbi_llm.hpp examples/* tests/*.* notebooks/*.ipynb README.md Makefile)
bad=0; cited=0
while IFS=: read -r file line text; do
  for l in $(grep -o "$label" <<< "$text"); do
    cited=$((cited + 1))
    grep -qxF -- "$l" <<< "$defined" || { echo "labels: ✗ $file:$line cites $l, which no METHOD NOTES block defines"; bad=1; }
  done
done < <(grep -n -o "$label.*" $files 2>/dev/null | grep -v '^tests/check_labels.sh:')
brief=SPEC  # the developers' brief: a document outside the repository that nothing here may cite
outside=$(grep -n -E "shared/$brief|$brief §|$brief\.md|\.\./shared" $files .ci/run 2>/dev/null | grep -v '^.ci/run:.*shared/data' | head -5)
if [ -n "$outside" ]; then echo "labels: ✗ references to a document outside the repository:"; echo "$outside"; bad=1; fi
[ $bad = 0 ] && echo "labels: ✓ $cited citations of $(wc -l <<< "$defined") labels, every one defined in a METHOD NOTES block; no reference outside the repository"
exit $bad
