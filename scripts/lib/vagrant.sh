# Sourced by scripts/check-host-tools --vagrant and scripts/devvm-vagrant:
# Debian's Vagrant with its libvirt provider, libvirt's daemons (started by
# hand where systemd is not PID 1), and dnsmasq, which serves DHCP on the
# network vagrant-libvirt makes for its VMs.

VAGRANT_TOOLS=(
    vagrant=vagrant
    /usr/share/doc/vagrant-libvirt/copyright=vagrant-libvirt
    libvirtd=libvirt-daemon-system
    virsh=libvirt-clients
    dnsmasq=dnsmasq-base
)

# The system connection, which is Debian's default and the one the README
# describes.
export LIBVIRT_DEFAULT_URI=${LIBVIRT_DEFAULT_URI:-qemu:///system}

# Installs and starts what is missing; the daemons it started by hand are
# named in VAGRANT_STARTED, for vagrant_stop.
VAGRANT_STARTED=()
vagrant_host() {
    host_tools "${VAGRANT_TOOLS[@]}"
    if [[ $(cat /proc/1/comm 2>/dev/null) == systemd ]]; then
        as_root systemctl start virtlogd.socket libvirtd.service
    else
        local daemon
        for daemon in virtlogd libvirtd; do
            pgrep -x "$daemon" >/dev/null && continue
            as_root "$daemon" -d
            VAGRANT_STARTED+=("$daemon")
        done
    fi
    local i
    for i in $(seq 50); do
        virsh version >/dev/null 2>&1 && return 0
        sleep 0.2
    done
    echo "$0: libvirtd does not answer on $LIBVIRT_DEFAULT_URI" >&2
    exit 1
}

# Stops the daemons vagrant_host started by hand (libvirtd first).
vagrant_stop() {
    local i
    for ((i = ${#VAGRANT_STARTED[@]} - 1; i >= 0; i--)); do
        as_root pkill -x "${VAGRANT_STARTED[i]}" || true
    done
}
