# shellcheck shell=bash
# bench/common.sh: sourced by bench/compare and bench/footprint, never run.
# Logging, arithmetic, mailbox paths, and getting the stack and a deskbridge
# binary ready. The sourcing script sets $repo first.

# Numbers are printed with a decimal point whatever the locale, and the
# servers' commands are found in the sbin folders.
export LC_ALL=C
PATH="$PATH:/usr/sbin:/sbin"
say() { echo "bench: $*" >&2; }
now() { date +%s.%N; }
# calc EXPR: floating-point arithmetic (awk), e.g. calc "$b - $a".
calc() { awk "BEGIN { printf \"%.6f\", $1 }"; }
# userdir_of USER@DOMAIN: the user's folder in the stack's mail store.
userdir_of() { echo "$STACK_DIR/mail/${1#*@}/${1%@*}"; }

# prepare_bench NAME [COMMAND...]: installs the stack and, from Debian's
# packages, GNU time, python3 and each COMMAND that is missing (package and
# command share the name); starts the stack and reads its stack.env; sets
# $deskbridge to DESKBRIDGE_BIN (another build, for A/B runs) or to a fresh
# release build of this checkout. NAME prefixes its errors.
prepare_bench() {
    local name="$1"
    shift
    cd "${repo:?the sourcing script sets repo}" || exit 2
    bash scripts/stack-install
    local missing=() command
    for command in "$@"; do
        command -v "$command" >/dev/null || missing+=("$command")
    done
    /usr/bin/time --version 2>&1 | grep -q GNU || missing+=(time)
    command -v python3 >/dev/null || missing+=(python3)
    if [ ${#missing[@]} -gt 0 ]; then
        say "installing ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
    bash scripts/stack-up
    # shellcheck disable=SC1091
    . "${DESKBRIDGE_STACK_DIR:-/var/tmp/deskbridge-stack}/stack.env"
    if [ -n "${DESKBRIDGE_BIN:-}" ]; then
        deskbridge="$DESKBRIDGE_BIN"
        [ -x "$deskbridge" ] || { echo "$name: DESKBRIDGE_BIN=$deskbridge is not executable" >&2; exit 2; }
    else
        say "building deskbridge (release)"
        cargo build --release --quiet
        deskbridge="$repo/target/release/deskbridge"
    fi
}
