#!/usr/bin/env bash
# Verify a Kinetic webhook with openssl: verify.sh BODY_FILE "MD-Signature value" whsec_…
# Prints the timestamp and exits 0 if a v1 signature matches and t is within 5 minutes.
set -euo pipefail
body_file=$1 header=$2 secret=$3 tolerance=${4:-300}
t=$(tr ',' '\n' <<<"$header" | sed -n 's/^ *t=//p')
[[ "$t" =~ ^[0-9]+$ ]] || { echo "malformed MD-Signature header" >&2; exit 1; }
now=${NOW:-$(date +%s)}  # NOW=… checks a recorded delivery
(( ${now} - t <= tolerance && t - ${now} <= tolerance )) || { echo "timestamp outside the tolerance window" >&2; exit 1; }
expected=$( { printf '%s.' "$t"; cat "$body_file"; } | openssl dgst -sha256 -hmac "$secret" -r | cut -d' ' -f1)
while read -r sig; do
  # A plain comparison: fine for checking by hand, not for a server (use a constant-time one).
  [[ "$sig" == "$expected" ]] && { echo "$t"; exit 0; }
done < <(tr ',' '\n' <<<"$header" | sed -n 's/^ *v1=//p')
echo "no signature matches" >&2
exit 1
