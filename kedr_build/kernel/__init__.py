"""What we build against: pinned kernel descriptions (data), provisioning from
Debian's archive, kbuild, in-tree module dependencies, host tools."""
