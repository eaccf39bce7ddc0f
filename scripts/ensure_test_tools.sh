#!/usr/bin/env bash
# System tools the test suite drives for real; installed once, reused after.
set -euo pipefail
need=()
command -v chromium >/dev/null 2>&1 || need+=(chromium)
# WenQuanYi Micro Hei: Chinese labels render (not as boxes) in the annotation test's screenshot, and
# tests/test_screenshot_prompt.py draws its widget screenshots' prompts in it and in DejaVu Sans
[ -f /usr/share/fonts/truetype/wqy/wqy-microhei.ttc ] || need+=(fonts-wqy-microhei)
[ -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || need+=(fonts-dejavu-core)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing ${need[*]} (Debian) for the browser and screenshot tests" >&2
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi
# TeX Live + dvipng for the formula renderer's tests
bash "$(dirname "$0")/../datasets/formulas/install_tex.sh"
