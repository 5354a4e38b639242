# Sourced by the cluster scripts: install missing Debian packages (apt-get), or say why not.
# ensure_packages CMD:PACKAGE ... -> 0 when every CMD is on PATH afterwards; otherwise 1 with
# INSTALL_PROBLEM set to a one-line reason (no apt-get, no package registry, install failed).

ensure_packages() {
  local missing=() pair
  for pair in "$@"; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair#*:}")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if ! command -v apt-get >/dev/null 2>&1; then
    INSTALL_PROBLEM="${missing[*]} not installed and apt-get not found (install them by hand)"
    return 1
  fi
  if ! apt-get update -qq >/tmp/qgen-apt-update.log 2>&1; then
    INSTALL_PROBLEM="apt-get update failed, no package registry reachable: $(tail -n 1 /tmp/qgen-apt-update.log)"
    return 1
  fi
  if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/tmp/qgen-apt-install.log 2>&1; then
    INSTALL_PROBLEM="apt-get install ${missing[*]} failed: $(tail -n 1 /tmp/qgen-apt-install.log)"
    return 1
  fi
}
