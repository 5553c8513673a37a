"""Real hypervisor hosts (libvirtd + QEMU + sshd) on this one machine: see lab.lifecycle."""
