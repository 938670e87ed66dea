#!/usr/bin/env bash
# The main job end to end: installs what is missing, builds, makes a SoftHSM demo token,
# signs a sample message with a key that stays on the token, and verifies the result.
set -euo pipefail

source_dir=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)
build_dir=${BUILD_DIR:-$source_dir/build}
demo_dir=${DEMO_DIR:-$source_dir/build/demo}
p11smime=$build_dir/cli/p11smime
module=/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so

"$source_dir/scripts/install-deps.sh"
"$source_dir/scripts/build.sh"

echo "== Demo token in $demo_dir"
"$source_dir/softhsm-setup/setup.sh" "$demo_dir" >/dev/null
export SOFTHSM2_CONF=$demo_dir/softhsm2.conf
"$p11smime" list --module "$module"

cat >"$demo_dir/message.eml" <<MESSAGE
From: rsa2048@example.org
To: friend@example.org
Subject: Signed on a PKCS#11 token
Date: $(date -R)
MIME-Version: 1.0
Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: 8bit

Hello from p11smime. The private key never left the token.
MESSAGE

echo "== Signing $demo_dir/message.eml"
"$p11smime" sign --module "$module" --pin-file "$demo_dir/pin.txt" \
    --key 'pkcs11:token=p11smime-test;object=rsa2048;type=private' \
    --in "$demo_dir/message.eml" --out "$demo_dir/signed.eml"
echo "signed message: $demo_dir/signed.eml"

echo "== Verifying with p11smime"
"$p11smime" verify --ca-file "$demo_dir/ca/ca.pem" --no-system-ca --in "$demo_dir/signed.eml"

echo "== Verifying with openssl cms"
openssl cms -verify -CAfile "$demo_dir/ca/ca.pem" -purpose smimesign \
    -in "$demo_dir/signed.eml" -out /dev/null
