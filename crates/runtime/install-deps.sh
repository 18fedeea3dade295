#!/usr/bin/env bash
# Installs what the runtime's tests and benchmark need and is missing, from
# Debian: busybox-static (the tests' images are built from it), umoci and
# skopeo (real OCI tools the tests check shoal against), docker-registry (the
# registry `image fetch` is tested against), runc (the benchmark's reference
# runtime), iproute2 and iptables (networking), zstd (the tests' zstd
# layers), gcc and libc6-dev (the hostile-workload test's static probe). Idempotent and quiet on success.
set -euo pipefail

# Debian package that provides each program.
declare -A package_for_program=(
    [/bin/busybox]=busybox-static
    [/usr/bin/umoci]=umoci
    [/usr/bin/skopeo]=skopeo
    [/usr/bin/docker-registry]=docker-registry
    [/usr/sbin/runc]=runc
    [/usr/sbin/ip]=iproute2
    [/usr/sbin/iptables]=iptables
    [/usr/bin/zstd]=zstd
    [/usr/bin/gcc]=gcc
)

missing_packages=()
for program in "${!package_for_program[@]}"; do
    if [[ ! -x "$program" ]]; then
        missing_packages+=("${package_for_program[$program]}")
    fi
done
# The hostile-workload test's probe is C, linked static against libc.a.
if [[ ! -e /usr/include/stdio.h ]]; then
    missing_packages+=(libc6-dev)
fi
((${#missing_packages[@]} == 0)) && exit 0

if [[ $(id -u) -eq 0 ]]; then
    as_root=()
elif command -v sudo >/dev/null; then
    as_root=(sudo -n)
else
    echo "runtime install-deps: need root (or sudo) to install: ${missing_packages[*]}" >&2
    exit 1
fi

log=$(mktemp)
trap 'rm -f "$log"' EXIT
if ! { "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q &&
    "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
        --no-install-recommends "${missing_packages[@]}"; } >"$log" 2>&1; then
    cat "$log" >&2
    echo "runtime install-deps: failed to install ${missing_packages[*]}" >&2
    exit 1
fi
