#!/usr/bin/env bash
# A scripted tour of keyledger against a fresh ledger in ./demo/ (run by `make demo`).
set -euo pipefail
cd "$(dirname "$0")/.."

export KEYLEDGER_DB=demo/keyledger.db
export KEYLEDGER_ACTOR=demo@keyledger
# A demo password only: real ones come from a secret manager, never from a script.
export ENCRYPTION_MASTER_PASSWORD=demo-master-password-change-me
export ENCRYPTION_NEW_MASTER_PASSWORD=demo-new-master-password-change-me

if [ -t 1 ] && [ -z "${NO_COLOR:-}" ]; then bold=$'\033[1m' plain=$'\033[0m'; else bold='' plain=''; fi
step() {
    printf '\n%s$ %s%s\n' "$bold" "$*" "$plain"
    "$@"
}

rm -rf demo && mkdir demo
echo "keyledger tour: ledger in $KEYLEDGER_DB, actor $KEYLEDGER_ACTOR"

step keyledger init
step keyledger secrets import docs/samples/app.env
# Ciphertexts exported from the old key-rotation system, under the same master password:
# its version 1 collides with our own random version 1 (re-encrypted), its version 2 is
# taken over as is, and its legacy entry's nonce starts with 0x02 (the old system misread it).
step keyledger secrets import-seed docs/samples/legacy-export.json
printf '%s' 'postgres://app:s3cr3t@db/app' > demo/database_url.txt
step keyledger secrets set DATABASE_URL < demo/database_url.txt
rm demo/database_url.txt
step keyledger info
step keyledger report
step keyledger rotate --reason "quarterly rotation" --yes
step keyledger report
step keyledger migrate --yes
step keyledger report
step keyledger secrets get legacy_smtp_password
step keyledger rekey-master --yes
export ENCRYPTION_MASTER_PASSWORD="$ENCRYPTION_NEW_MASTER_PASSWORD"
step keyledger health-check
# The audit trail: prove nothing was altered, anchor the head elsewhere, review, report.
step keyledger audit verify
step keyledger audit anchor --out demo/keyledger.anchor
step keyledger audit verify --anchor demo/keyledger.anchor --pubkey "$(keyledger audit pubkey)"
step keyledger secrets history DATABASE_URL
step keyledger audit incident --version 1
step keyledger audit export --format html --out demo/compliance-report.html
printf '\nDone. The ledger is %s; try: keyledger --db %s secrets list\n' "$KEYLEDGER_DB" "$KEYLEDGER_DB"
printf 'The compliance report is demo/compliance-report.html; open it in a browser.\n'
