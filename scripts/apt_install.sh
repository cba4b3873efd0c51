#!/bin/sh
# Install Debian packages a test target needs, saying so first (Makefile's APT_INSTALL).
#   apt_install.sh APT TARGET "WHAT (size; why)" PACKAGE...
# APT=no, not root, or no apt-get: print how to install them and return 0;
# the tests that need them then skip naming the package (fail under CI=true).
apt=$1 target=$2 what=$3
shift 3
if [ "$apt" = no ]; then
  echo "$target: skipped (APT=no): $what is missing; 'sudo apt-get install $*' to run those tests"
  exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "$target: $what is missing; run 'sudo apt-get install $*' or those tests are skipped"
  exit 0
fi
echo "$target: installing Debian's $what with apt-get; 'make test APT=no' skips this"
apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@"
