#!/bin/sh
# Prints the path of a verified TinyShakespeare corpus (1,115,394 bytes), fetching it on first use.
#   TINYSHAKESPEARE=/path/to/input.txt   use that local copy (it must match the checksum)
#   otherwise: data/tinyshakespeare.txt, downloaded once from the char-rnn repository. It is never committed.
set -eu
SHA=86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed
URL=https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt
here=$(cd "$(dirname "$0")" && pwd)

sha_of() {
  if command -v sha256sum >/dev/null 2>&1; then sha256sum "$1" | cut -d' ' -f1; else shasum -a 256 "$1" | cut -d' ' -f1; fi
}
verify() {  # $1 = path, $2 = where it came from
  if [ ! -f "$1" ]; then echo "error: TinyShakespeare not found at '$1' ($2)" >&2; exit 1; fi
  got=$(sha_of "$1")
  if [ "$got" != "$SHA" ]; then
    echo "error: '$1' ($2) is not the TinyShakespeare corpus: sha256 $got, expected $SHA" >&2; exit 1
  fi
}

if [ -n "${TINYSHAKESPEARE:-}" ]; then
  verify "$TINYSHAKESPEARE" "from TINYSHAKESPEARE"
  echo "$TINYSHAKESPEARE"; exit 0
fi
dest="$here/tinyshakespeare.txt"
if [ ! -f "$dest" ]; then
  echo "data: downloading TinyShakespeare to $dest ..." >&2
  tmp="$dest.part"
  if command -v curl >/dev/null 2>&1; then ok=curl; curl -fsSL "$URL" -o "$tmp" || ok=
  elif command -v wget >/dev/null 2>&1; then ok=wget; wget -q "$URL" -O "$tmp" || ok=
  else echo "error: need curl or wget to download $URL (or set TINYSHAKESPEARE=/path/to/input.txt)" >&2; exit 1; fi
  if [ -z "$ok" ]; then
    rm -f "$tmp"
    echo "error: download of $URL failed; no network? Set TINYSHAKESPEARE=/path/to/input.txt to use a local copy." >&2
    exit 1
  fi
  verify "$tmp" "downloaded from $URL"
  mv "$tmp" "$dest"
fi
verify "$dest" "data/tinyshakespeare.txt"
echo "$dest"
