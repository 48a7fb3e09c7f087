# Shared settings of the local mail stack; sourced by the other scripts.
# Everything lives under one folder outside the checkout, because Dovecot's
# unprivileged login and mail processes must be able to traverse its path.
STACK_DIR="${DESKBRIDGE_STACK_DIR:-/var/tmp/deskbridge-stack}"
STACK_PORT_BASE="${DESKBRIDGE_STACK_PORT_BASE:-29000}"
STACK_IMAPS_PORT=$((STACK_PORT_BASE + 993))
STACK_IMAP_PORT=$((STACK_PORT_BASE + 143))
STACK_AUTH_PORT=$((STACK_PORT_BASE + 12))
STACK_SUBMISSION_PORT=$((STACK_PORT_BASE + 587))
STACK_SMTPS_PORT=$((STACK_PORT_BASE + 465))
# Plain SMTP on loopback, for benchmark peers that cannot do TLS (fetchmail's
# SMTP side, smtp-source); deskbridge itself has no plaintext mode.
STACK_SMTP_PLAIN_PORT=$((STACK_PORT_BASE + 25))
# Every mailbox of the test stack shares this password (Dovecot's static passdb).
STACK_PASSWORD="stack-secret"
STACK_POSTFIX_DIR="$STACK_DIR/postfix/etc"
STACK_DOVECOT_CONF="$STACK_DIR/dovecot/dovecot.conf"

die() {
    echo "deskbridge stack: $*" >&2
    exit 1
}
