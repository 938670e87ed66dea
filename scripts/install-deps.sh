#!/usr/bin/env bash
# Installs the Debian 12 packages that p11smime needs to build and test, when any is missing.
set -euo pipefail

readonly PACKAGES=(
    # build
    g++ cmake make pkg-config
    libssl-dev libp11-dev libp11-kit-dev libgmime-3.0-dev
    libcli11-dev nlohmann-json3-dev doctest-dev libpcsclite-dev libmilter-dev
    # tokens
    p11-kit softhsm2 opensc libengine-pkcs11-openssl
    # interoperability and test tools
    openssl gpgsm gpg-agent libnss3-tools python3 ca-certificates
    # git signing and mail client tests
    git neomutt
    # revocation tests: responses and CRLs dated in the past
    faketime
    # PC/SC tests: a private pcscd with a virtual reader and card, in their own namespaces
    pcscd vsmartcard-vpcd vsmartcard-vpicc python3-virtualsmartcard python3-pycryptodome
    iproute2
    # fuzzing (clang and its libFuzzer runtime) and sanitizer reports (llvm-symbolizer);
    # script(1) from bsdutils gives the PIN tests a terminal
    clang libclang-rt-14-dev llvm bsdutils
    # the milter's end-to-end test runs a private Postfix instance and sends with swaks
    postfix swaks
)

missing=()
for package in "${PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'install ok installed'; then
        missing+=("$package")
    fi
done

if ((${#missing[@]} == 0)); then
    exit 0
fi

sudo_command=()
if ((EUID != 0)); then
    sudo_command=(sudo)
fi
echo "p11smime: installing ${missing[*]}" >&2
# The postfix package prompts for the type of the system instance. "No configuration"
# writes no main.cf and starts nothing, because the tests run their own instance.
echo "postfix postfix/main_mailer_type select No configuration" |
    "${sudo_command[@]}" debconf-set-selections
"${sudo_command[@]}" apt-get update -q
DEBIAN_FRONTEND=noninteractive "${sudo_command[@]}" apt-get install -y -q --no-install-recommends \
    "${missing[@]}"
