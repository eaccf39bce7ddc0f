#!/usr/bin/env bash
# Install the offline LaTeX renderer used by datasets/formulas (Debian/Ubuntu, ~224 MB).
# Does nothing when `latex` and `dvipng` are already on PATH. Needs root or sudo.
#
#   bash datasets/formulas/install_tex.sh           # latex + dvipng: Computer Modern, Palatino, Times, Euler
#   bash datasets/formulas/install_tex.sh --fonts   # + every math font of clip_match.formulas.render_tex.TEX_FONTS
#                                                   #   (training the formula model; ~1.9 GB more)
set -euo pipefail

packages=(texlive-latex-base texlive-latex-recommended texlive-fonts-recommended dvipng)
if [[ ${1:-} == --fonts ]]; then
    # lmodern; newtx/newpx and libertinus (+ their xstring, fontaxes, binhex); STIX2, Fourier, kpfonts, CM Bright, Arev
    packages+=(lmodern texlive-latex-extra texlive-plain-generic texlive-fonts-extra)
    found=$(kpsewhich lmodern.sty newtxmath.sty stix2.sty libertinus.sty binhex.tex 2>/dev/null | wc -l || true)
    if command -v latex >/dev/null 2>&1 && command -v dvipng >/dev/null 2>&1 && [[ ${found} -eq 5 ]]; then
        echo "install_tex: latex, dvipng and the math fonts already installed" >&2
        exit 0
    fi
elif [[ $# -gt 0 ]]; then
    echo "install_tex: unknown option $1 (only --fonts)" >&2
    exit 2
elif command -v latex >/dev/null 2>&1 && command -v dvipng >/dev/null 2>&1; then
    echo "install_tex: latex and dvipng already installed" >&2
    exit 0
fi

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
