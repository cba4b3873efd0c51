#!/bin/sh
# Build a Debian 12 base image with Python 3.11 from Debian's own packages
# (debootstrap from deb.debian.org), for machines that reach the Debian
# package archive but no container registry (Docker Hub is unreachable on the
# build machines here).  `make image` runs it when BASE_IMAGE is the local one
# and missing; anywhere a registry is reachable, `make image
# BASE_IMAGE=docker.io/library/python:3.11-slim-bookworm` skips it.
#
#   scripts/build_base_image.sh IMAGE [MIRROR]
#
# The image holds a minimal Debian (minbase), python3 and python3-venv (the
# Dockerfile's build stage makes virtual environments with it), no compiler,
# no apt lists, no docs.  Needs root, buildah and debootstrap.
set -eu
image=${1:?usage: build_base_image.sh IMAGE [MIRROR]}
mirror=${2:-http://deb.debian.org/debian}
suite=bookworm

ctr=$(buildah from scratch)
trap 'buildah rm "$ctr" >/dev/null 2>&1 || true' EXIT
root=$(buildah mount "$ctr")
echo "base image: debootstrap $suite (minbase + python3, python3-venv) from $mirror"
debootstrap --variant=minbase --include=python3,python3-venv "$suite" "$root" "$mirror" \
  > "${TMPDIR:-/tmp}/eventrouter-debootstrap.log" 2>&1 \
  || { tail -20 "${TMPDIR:-/tmp}/eventrouter-debootstrap.log"; exit 1; }
chroot "$root" apt-get clean
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/log/*.log \
  "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/locale/* \
  "$root"/usr/share/info/*
buildah umount "$ctr" >/dev/null
buildah config --env LANG=C.UTF-8 --cmd /bin/sh \
  --label org.opencontainers.image.description="Debian $suite minbase with python3 (debootstrap)" \
  "$ctr"
buildah commit --quiet --format docker --rm "$ctr" "$image"
trap - EXIT
echo "base image: $image"
