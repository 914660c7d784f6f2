# Sourced first by the set-up scripts (demo.sh, test.sh, setup.sh): Hearth
# creates namespaces, cgroups and mounts, so they run as root. Run by
# another user, a script runs itself again through sudo, keeping PATH (Go
# may be on the caller's only) and the HEARTH_* and FUZZTIME settings,
# which sudo would drop; a fresh Debian machine where one is root has no
# sudo and needs none. Only bash builtins run before that.
if [ "$EUID" != 0 ]; then
  if ! command -v sudo >/dev/null 2>&1; then
    echo "${0##*/}: run as root (Hearth creates namespaces, cgroups and mounts); sudo is not installed" >&2
    exit 1
  fi
  asroot_env=("PATH=$PATH")
  for asroot_v in $(compgen -e); do
    case $asroot_v in HEARTH_* | FUZZTIME) asroot_env+=("$asroot_v=${!asroot_v}") ;; esac
  done
  asroot_self=$0
  [[ $asroot_self == /* ]] || asroot_self=$PWD/$asroot_self
  exec sudo env "${asroot_env[@]}" "$asroot_self" "$@"
fi
