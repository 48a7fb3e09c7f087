# Shared settings of the local mail stack; sourced by the other scripts.
# Everything lives under one folder outside the checkout, because Dovecot's
# unprivileged login and mail processes must be able to traverse its path.
STACK_DIR="${DESKBRIDGE_STACK_DIR:-/var/tmp/deskbridge-stack}"
# The servers' commands live in the sbin folders, which `su` without `-`
# leaves off root's PATH.
PATH="$PATH:/usr/sbin:/sbin"
export PATH
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
# The key that signs the stack's OAuth 2.0 test tokens (HS256 JWTs), which
# Dovecot validates locally for XOAUTH2 logins over IMAP and, through
# Postfix's Dovecot SASL, SMTP.
STACK_OAUTH_KEY="stack-oauth-signing-key-for-tests"
STACK_POSTFIX_DIR="$STACK_DIR/postfix/etc"
STACK_DOVECOT_CONF="$STACK_DIR/dovecot/dovecot.conf"

die() {
    echo "deskbridge stack: $*" >&2
    exit 1
}

# The stack's Dovecot master, if the pid file names the Dovecot started with
# the stack's config. The pid file survives reboots in /var/tmp, when its
# number may belong to any process (the system's own Dovecot included): that
# one must never be signalled.
stack_dovecot_pid() {
    local pid_file="$STACK_DIR/run/dovecot/master.pid" pid
    [ -f "$pid_file" ] || return 1
    pid="$(cat "$pid_file")"
    [ -n "$pid" ] && tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline" | grep -qF -- "$STACK_DOVECOT_CONF" \
        || return 1
    echo "$pid"
}

# Whether the rust toolchain the build needs is here; if not, says how to
# get it (rustup is not a Debian package, and Debian 12's rustc is 1.63).
need_rust() {
    local version
    if ! command -v cargo >/dev/null || ! cargo fmt --version >/dev/null 2>&1 \
        || ! cargo clippy --version >/dev/null 2>&1; then
        die "Rust 1.95 with rustfmt and clippy is needed: curl https://sh.rustup.rs -sSf | sh -s -- -y --default-toolchain 1.95 --component rustfmt,clippy; then . ~/.cargo/env"
    fi
    version="$(rustc --version | cut -d' ' -f2)"
    if [ "$(printf '%s\n1.95.0\n' "$version" | sort -V | head -n1)" != 1.95.0 ]; then
        die "Rust $version is too old; 1.95 is needed: rustup toolchain install 1.95 --component rustfmt,clippy"
    fi
}
