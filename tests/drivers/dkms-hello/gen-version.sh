#!/bin/sh
# PRE_BUILD: DKMS runs it in the build directory (a fresh copy of the package).
echo "#define HELLO_VERSION \"$1\"" > src/version.h
