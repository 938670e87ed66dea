#!/usr/bin/env bash
# Benchmark of p11smime against raw C_Sign, openssl cms with libp11's engine, openssl dgst and
# openssl enc, on a throwaway SoftHSM token. Every comparison is a ratio of two measurements
# taken in alternation on the same machine, so that a busy machine slows both sides alike.
#
# Usage: bench/run.sh [--smoke] [--runs N] [--big-mib N] [--work-dir DIR]
#
#   --smoke        a quick run with small counts, to check that the script works
#   --runs N       repetitions of each measurement; the medians are reported (default 5)
#   --big-mib N    size of the large message in MiB (default 1024)
#   --work-dir DIR keep the token, messages and raw timings in DIR (default: a temporary
#                  folder, removed at the end)
#
# Needs a build in build/ (or P11SMIME and SIGN_THROUGHPUT naming the binaries), SoftHSM,
# libengine-pkcs11-openssl and python3. Prints a Markdown table of the results and
# their targets, and keeps the raw timings in DIR/timings.txt.
set -euo pipefail

source_dir=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)
readonly SOFTHSM_MODULE=/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so
readonly ENGINE_MODULE_DIR=/usr/lib/x86_64-linux-gnu/engines-3
: "${P11SMIME:=$source_dir/build/cli/p11smime}"
: "${SIGN_THROUGHPUT:=$source_dir/build/bench/sign-throughput}"

runs=5
big_mib=1024
small_messages=1000
openssl_messages=200
single_processes=30
work_dir=
while (($#)); do
    case $1 in
    --smoke)
        runs=1 big_mib=16 small_messages=50 openssl_messages=10 single_processes=3
        ;;
    --runs) runs=$2 && shift ;;
    --big-mib) big_mib=$2 && shift ;;
    --work-dir) work_dir=$2 && shift ;;
    *)
        echo "usage: $0 [--smoke] [--runs N] [--big-mib N] [--work-dir DIR]" >&2
        exit 2
        ;;
    esac
    shift
done

for tool in "$P11SMIME" "$SIGN_THROUGHPUT"; do
    [[ -x $tool ]] || { echo "bench: $tool is not built; run cmake --build build" >&2 && exit 2; }
done
[[ -f $SOFTHSM_MODULE ]] || { echo "bench: SoftHSM is not installed" >&2 && exit 2; }
[[ -f $ENGINE_MODULE_DIR/pkcs11.so ]] ||
    { echo "bench: libengine-pkcs11-openssl is not installed" >&2 && exit 2; }

if [[ -z $work_dir ]]; then
    work_dir=$(mktemp -d "${TMPDIR:-/tmp}/p11smime-bench.XXXXXX")
    trap 'rm -rf -- "$work_dir"' EXIT
fi
mkdir -p -- "$work_dir"
work_dir=$(cd -- "$work_dir" && pwd -P)
timings=$work_dir/timings.txt
: >"$timings"

bash "$source_dir/softhsm-setup/setup.sh" "$work_dir/hsm" >"$work_dir/setup.out"
export SOFTHSM2_CONF=$work_dir/hsm/softhsm2.conf
pin_file=$work_dir/hsm/pin.txt
key_uri='pkcs11:token=p11smime-test;object=rsa2048;type=private'
ca_file=$work_dir/hsm/ca/ca.pem
sign=("$P11SMIME" sign --max-size 0 --module "$SOFTHSM_MODULE" --key "$key_uri"
    --pin-file "$pin_file")

# Records NAME with the wall seconds, CPU seconds and peak RSS in KiB of one run of COMMAND.
# The command's standard error goes to DIR/stderr.log; a failure stops the benchmark. Dirty
# pages are written out first, because the gigabytes that earlier commands wrote would
# otherwise throttle the writes of whichever command comes next.
# measure NAME COMMAND [ARG...]
measure() {
    local name=$1
    shift
    sync
    if ! python3 "$source_dir/bench/measure.py" "$timings" "$name" "$work_dir/stderr.log" \
        "$@"; then
        tail -n 20 -- "$work_dir/stderr.log" >&2
        exit 1
    fi
}

write_small_message() {
    printf '%s\n' "From: Bench <rsa2048@example.org>" "To: someone@example.net" \
        "Subject: message $2" "MIME-Version: 1.0" "Content-Type: text/plain; charset=us-ascii" \
        "" "Message $2 of the benchmark." "It has a few lines of plain text." >"$1"
}

# A large message: headers, then base64 lines of 76 characters, as a big attachment has.
write_big_message() {
    {
        printf '%s\r\n' "From: Bench <rsa2048@example.org>" "To: someone@example.net" \
            "Subject: large message" "MIME-Version: 1.0" \
            "Content-Type: application/octet-stream" "Content-Transfer-Encoding: base64" ""
        head -c $((big_mib * 1024 * 1024 / 78 * 57)) /dev/urandom | base64 -w 76 |
            sed 's/$/\r/'
    } >"$1"
}

echo "bench: preparing $small_messages small messages and a $big_mib MiB message in $work_dir" >&2
mkdir -p "$work_dir/small" "$work_dir/out"
for ((i = 1; i <= small_messages; i++)); do
    write_small_message "$work_dir/small/message-$i.eml" "$i"
done
write_big_message "$work_dir/big.eml"

# Runs openssl cms -sign with libp11's engine once per message, as a mail system does today.
openssl_per_message() {
    local i
    for ((i = 1; i <= openssl_messages; i++)); do
        PKCS11_MODULE_PATH=$SOFTHSM_MODULE openssl cms -sign -engine pkcs11 -keyform engine \
            -inkey "$key_uri;pin-value=$(cat -- "$pin_file")" \
            -signer "$work_dir/hsm/certs/rsa2048.pem" -in "$work_dir/small/message-$i.eml" \
            -out "$work_dir/openssl-signed.eml" 2>/dev/null
    done
}
export -f openssl_per_message
export SOFTHSM_MODULE key_uri pin_file work_dir openssl_messages

echo "bench: batch signing against raw C_Sign and openssl" >&2
for ((run = 1; run <= runs; run++)); do
    for threads in 1 2; do
        "$SIGN_THROUGHPUT" "$SOFTHSM_MODULE" p11smime-test rsa2048 "$pin_file" \
            "$small_messages" "$threads" |
            awk -v threads="$threads" '{print "raw_sign_rate_threads_" threads, $8}' >>"$timings"
        measure "batch_jobs_$threads" "${sign[@]}" --jobs "$threads" --out-dir "$work_dir/out" \
            "$work_dir"/small/*.eml
    done
    measure openssl_per_message bash -c openssl_per_message
done

echo "bench: one process against one openssl process" >&2
for ((run = 1; run <= single_processes; run++)); do
    measure single_p11smime "${sign[@]}" --in "$work_dir/small/message-1.eml" \
        --out "$work_dir/single.eml"
    measure single_openssl env PKCS11_MODULE_PATH="$SOFTHSM_MODULE" openssl cms -sign \
        -engine pkcs11 -keyform engine -inkey "$key_uri;pin-value=$(cat -- "$pin_file")" \
        -signer "$work_dir/hsm/certs/rsa2048.pem" -in "$work_dir/small/message-1.eml" \
        -out "$work_dir/single-openssl.eml"
done

echo "bench: the $big_mib MiB message" >&2
# The same content as a bare DER structure, without MIME and base64, shows what base64 costs.
openssl cms -encrypt -aes-256-gcm -binary -stream -outform DER -in "$work_dir/big.eml" \
    -out "$work_dir/big.der" "$work_dir/hsm/certs/rsa2048.pem"
gcm_key=$(openssl rand -hex 32)
ctr_iv=$(openssl rand -hex 16)
for ((run = 1; run <= runs; run++)); do
    measure big_dgst openssl dgst -sha256 "$work_dir/big.eml"
    measure big_sign "${sign[@]}" --in "$work_dir/big.eml" --out "$work_dir/big-signed.eml"
    measure big_sign_opaque "${sign[@]}" --opaque --in "$work_dir/big.eml" \
        --out "$work_dir/big-opaque.eml"
    measure big_verify "$P11SMIME" verify --max-size 0 --ca-file "$ca_file" --no-system-ca \
        --in "$work_dir/big-signed.eml" --out "$work_dir/big-verified.eml"
    measure big_verify_opaque "$P11SMIME" verify --max-size 0 --ca-file "$ca_file" --no-system-ca \
        --in "$work_dir/big-opaque.eml" --out "$work_dir/big-verified.eml"
    measure big_encrypt "$P11SMIME" encrypt --max-size 0 --cipher aes-256-gcm \
        --recipient "$work_dir/hsm/certs/rsa2048.pem" --in "$work_dir/big.eml" \
        --out "$work_dir/big-encrypted.eml"
    measure big_enc_ctr openssl enc -aes-256-ctr -K "$gcm_key" -iv "$ctr_iv" \
        -in "$work_dir/big.eml" -out "$work_dir/big-ctr.bin"
    measure big_decrypt "$P11SMIME" decrypt --max-size 0 --module "$SOFTHSM_MODULE" \
        --pin-file "$pin_file" \
        --in "$work_dir/big-encrypted.eml" --out "$work_dir/big-decrypted.eml"
    measure big_dec_ctr openssl enc -d -aes-256-ctr -K "$gcm_key" -iv "$ctr_iv" \
        -in "$work_dir/big-ctr.bin" -out "$work_dir/big-ctr-plain.bin"
    measure big_decrypt_der "$P11SMIME" decrypt --max-size 0 --module "$SOFTHSM_MODULE" \
        --pin-file "$pin_file" --in "$work_dir/big.der" --out "$work_dir/big-der-plain.eml"
    cmp -s -- "$work_dir/big-der-plain.eml" "$work_dir/big.eml" ||
        { echo "bench: the decrypted DER file differs from the original" >&2 && exit 1; }
    cmp -s -- "$work_dir/big-decrypted.eml" "$work_dir/big.eml" ||
        { echo "bench: the decrypted message differs from the original" >&2 && exit 1; }
    rm -f -- "$work_dir/big-ctr.bin" "$work_dir/big-ctr-plain.bin" "$work_dir/big-decrypted.eml" \
        "$work_dir/big-verified.eml" "$work_dir/big-der-plain.eml"
done

python3 - "$timings" "$small_messages" "$openssl_messages" "$big_mib" <<'PY'
import statistics
import sys
from collections import defaultdict

path, small, openssl_count, big_mib = sys.argv[1], *map(int, sys.argv[2:])
wall, cpu, rss, rates = defaultdict(list), defaultdict(list), defaultdict(list), defaultdict(list)
for line in open(path):
    fields = line.split()
    if len(fields) == 2:
        rates[fields[0]].append(float(fields[1]))
    else:
        name, seconds, cpu_seconds, kib = fields
        wall[name].append(float(seconds))
        cpu[name].append(float(cpu_seconds))
        rss[name].append(int(kib))
median = {name: statistics.median(values) for name, values in wall.items()}
cpu_median = {name: statistics.median(values) for name, values in cpu.items()}
rate_median = {name: statistics.median(values) for name, values in rates.items()}

def rate(name, count):
    return count / median[name]

rows = []
def row(label, value, target, met, detail):
    rows.append(f"| {label} | {value} | {target} | {'met' if met else 'not met'} | {detail} |")

for threads in (1, 2):
    raw = rate_median[f"raw_sign_rate_threads_{threads}"]
    ratio = rate(f"batch_jobs_{threads}", small) / raw
    row(f"1. batch signing, --jobs {threads}, against raw C_Sign with {threads} session(s)",
        f"{ratio:.2f}", ">= 0.9", ratio >= 0.9,
        f"{rate(f'batch_jobs_{threads}', small):.0f} against {raw:.0f} signatures/s")
default_jobs = "batch_jobs_2"
ratio = rate(default_jobs, small) / rate("openssl_per_message", openssl_count)
row("2. batch signing (--jobs 2) against openssl cms -engine pkcs11 per message",
    f"{ratio:.1f}", ">= 8", ratio >= 8,
    f"{rate(default_jobs, small):.0f} against {rate('openssl_per_message', openssl_count):.0f}"
    " messages/s")
ratio = median["single_p11smime"] / median["single_openssl"]
cpu_ratio = cpu_median["single_p11smime"] / cpu_median["single_openssl"]
row("3. one p11smime sign process against one openssl cms -engine pkcs11 process",
    f"{ratio:.2f}", "<= 0.7", ratio <= 0.7,
    f"{median['single_p11smime'] * 1000:.1f} against {median['single_openssl'] * 1000:.1f} ms"
    f" wall; CPU {cpu_ratio:.2f} ({cpu_median['single_p11smime'] * 1000:.1f} against "
    f"{cpu_median['single_openssl'] * 1000:.1f} ms)")
ratio = median["batch_jobs_1"] / median["batch_jobs_2"]
row("4. batch signing, --jobs 2 against --jobs 1, RSA-2048", f"{ratio:.2f}", ">= 1.8",
    ratio >= 1.8, f"{rate('batch_jobs_2', small):.0f} against "
    f"{rate('batch_jobs_1', small):.0f} messages/s")

baseline_names = {"big_dgst": "openssl dgst -sha256",
                  "big_enc_ctr": "openssl enc -aes-256-ctr",
                  "big_dec_ctr": "openssl enc -d -aes-256-ctr"}

def big(label, name, baseline, target):
    ratio = median[name] / median[baseline]
    peak = max(rss[name]) / 1024
    met = ratio <= target and peak < 64
    row(f"5. {big_mib} MiB {label} against {baseline_names[baseline]}",
        f"{ratio:.2f}", f"<= {target}, RSS < 64 MiB", met,
        f"{median[name]:.2f} s against {median[baseline]:.2f} s; peak RSS {peak:.1f} MiB")

big("detached signing", "big_sign", "big_dgst", 1.3)
big("opaque signing", "big_sign_opaque", "big_dgst", 1.3)
big("verifying (detached)", "big_verify", "big_dgst", 1.3)
big("verifying (opaque)", "big_verify_opaque", "big_dgst", 1.3)
big("AES-256-GCM encryption", "big_encrypt", "big_enc_ctr", 1.5)
big("AES-256-GCM decryption", "big_decrypt", "big_dec_ctr", 1.5)
big("AES-256-GCM decryption of a bare DER file", "big_decrypt_der", "big_dec_ctr", 1.5)

print("| measurement | ratio | target | result | medians |")
print("|---|---|---|---|---|")
print("\n".join(rows))
PY
