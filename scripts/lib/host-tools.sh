# Sourced by scripts/test and scripts/devvm: installs the Debian packages
# behind the commands a caller needs, then checks that every one of those
# commands is really there. Tools that belong together come from one source:
# QEMU's system emulator and qemu-utils are installed as a matching pair,
# because a machine may already carry a backported qemu-utils that
# installing the emulator alone would remove.

as_root() {
    if [[ $(id -u) -eq 0 ]]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        echo "$0: '$*' needs root" >&2
        exit 1
    fi
}

# present COMMAND: on PATH, or, for an absolute path, a file that exists.
present() {
    if [[ $1 == /* ]]; then [[ -e $1 ]]; else command -v "$1" >/dev/null 2>&1; fi
}

# host_tools COMMAND=PACKAGE...: install what is missing, then verify.
host_tools() {
    local pair missing=() qemu=0 command package
    for pair in "$@"; do
        command=${pair%%=*} package=${pair#*=}
        present "$command" && continue
        case $package in
        qemu-system-x86 | qemu-utils) qemu=1 ;;
        *) missing+=("$package") ;;
        esac
    done
    if ((qemu)) || ((${#missing[@]})); then
        export DEBIAN_FRONTEND=noninteractive
        printf '\n==> apt-get update\n' >&2
        as_root apt-get update -qq
        if ((qemu)); then
            # One version for both, the one the emulator's candidate has.
            local version
            version=$(apt-cache policy qemu-system-x86 | awk '/Candidate:/ {print $2}')
            if [[ -z $version || $version == "(none)" ]]; then
                echo "$0: no installable qemu-system-x86 in the apt sources" >&2
                exit 1
            fi
            missing+=("qemu-system-x86=$version" "qemu-utils=$version")
        fi
        printf '==> installing %s\n' "${missing[*]}" >&2
        as_root apt-get install -y -qq --no-install-recommends --allow-downgrades "${missing[@]}"
    fi
    verify_tools "$@"
}

# verify_tools COMMAND=PACKAGE...: fails naming every command that is absent.
verify_tools() {
    local pair command package absent=()
    for pair in "$@"; do
        command=${pair%%=*} package=${pair#*=}
        present "$command" || absent+=("$command (package $package)")
    done
    if ((${#absent[@]})); then
        printf '%s: missing after installing: %s\n' "$0" "${absent[*]}" >&2
        printf '%s: install them with apt-get install, then run again\n' "$0" >&2
        exit 1
    fi
}
