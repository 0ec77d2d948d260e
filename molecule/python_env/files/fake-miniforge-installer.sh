#!/bin/bash
# A stand-in for the Miniforge installer (conda channels and GitHub releases are unreachable in
# the test environment). It accepts the real installer's batch arguments (-b -p PREFIX) and lays
# out what the role looks for: PREFIX/bin/conda and PREFIX/etc/profile.d/conda.sh.
set -euo pipefail
prefix=""
while [ $# -gt 0 ]; do
    case "$1" in
        -b) shift ;;
        -p) prefix="$2"; shift 2 ;;
        *) echo "fake installer: unexpected argument $1" >&2; exit 2 ;;
    esac
done
[ -n "$prefix" ] || { echo "fake installer: -p PREFIX is required" >&2; exit 2; }
mkdir -p "$prefix/bin" "$prefix/etc/profile.d"
cat > "$prefix/bin/conda" <<'CONDA'
#!/bin/sh
echo "conda 0.0.0-fake (dlstack test stand-in)"
CONDA
chmod 0755 "$prefix/bin/conda"
echo "conda() { \"$prefix/bin/conda\" \"\$@\"; }" > "$prefix/etc/profile.d/conda.sh"
echo "fake Miniforge installed in $prefix"
