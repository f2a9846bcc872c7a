#!/bin/sh
# Debian's Chromium for the browser tests (tests/web). Playwright's own browser download does not
# work on these machines, so the tests drive /usr/bin/chromium. Idempotent: does nothing when it is
# there. Never fails the install: without Chromium the browser tests skip and say why.
set -u

if [ -n "${AION_CHROMIUM:-}" ] && [ -x "$AION_CHROMIUM" ]; then exit 0; fi
if [ -x /usr/bin/chromium ]; then exit 0; fi

say() { echo "ensure_chromium: $*" >&2; }

if ! command -v apt-get >/dev/null 2>&1; then
  say "no apt-get here; install Chromium yourself and set AION_CHROMIUM to its path (browser tests skip until then)"
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    SUDO="sudo -n"
  else
    say "not root and no password-less sudo; run 'sudo apt-get install chromium' (browser tests skip until then)"
    exit 0
  fi
fi

say "installing Debian's chromium for the browser tests (once)…"
if $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null; then
  say "installed $(/usr/bin/chromium --version 2>/dev/null || echo chromium)"
else
  say "apt-get could not install chromium; the browser tests will be skipped"
fi
exit 0
