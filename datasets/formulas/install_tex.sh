#!/usr/bin/env bash
# Install the offline LaTeX renderer used by datasets/formulas (Debian/Ubuntu, ~224 MB).
# Does nothing when `latex` and `dvipng` are already on PATH. Needs root or sudo.
set -euo pipefail

if command -v latex >/dev/null 2>&1 && command -v dvipng >/dev/null 2>&1; then
    echo "install_tex: latex and dvipng already installed" >&2
    exit 0
fi

packages=(texlive-latex-base texlive-latex-recommended texlive-fonts-recommended dvipng)
sudo_cmd=()
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || { echo "install_tex: need root or sudo to install ${packages[*]}" >&2; exit 1; }
    sudo_cmd=(sudo)
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "install_tex: apt-get not found; install ${packages[*]} (or any TeX Live with dvipng) yourself," >&2
    echo "             or render with --renderer mathtext (matplotlib only)" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
"${sudo_cmd[@]}" apt-get -o DPkg::Lock::Timeout=300 update -qq
"${sudo_cmd[@]}" apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends "${packages[@]}" >&2
echo "install_tex: installed ${packages[*]}" >&2
