# Sourced by scripts/test: the Debian packages the tests run for real, installed when missing.
#   spamd (SpamAssassin): the classifier's spam check (tests start their own on a free port)
#   chromium, chromium-driver: the console's browser tests (headless; no browser download)
#   dovecot-imapd: mailbox-sync's IMAP tests (each starts its own Dovecot on a free port)
set -euo pipefail
need=()
command -v spamd >/dev/null 2>&1 || [ -x /usr/sbin/spamd ] || need+=(spamd)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v chromedriver >/dev/null 2>&1 || need+=(chromium-driver)
[ -x /usr/sbin/dovecot ] || command -v dovecot >/dev/null 2>&1 || need+=(dovecot-imapd)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ]; then sudo=(); else sudo=(sudo -n); fi
  echo "installing test packages: ${need[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  # the package lists may be missing or stale on a fresh machine: refresh once on failure
  "${sudo[@]}" apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null \
    || { "${sudo[@]}" apt-get update -q >/dev/null \
         && "${sudo[@]}" apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null; }
fi
