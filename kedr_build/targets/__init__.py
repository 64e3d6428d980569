"""Where a run happens: the QEMU guest (default), a machine over SSH, a labgrid place."""
