# The steps of .ci/run, sourced by it and by tests/test_ci.py (which runs each against fakes).

# The page's end-to-end tests (tests/test_serve_browser.py, marker `browser`) drive Debian's
# chromium: playwright's own browser download is not reachable from our machines. Without it
# those tests fail, so CI installs it or stops here, red, with the reason.
ensure_chromium() {
  local chromium=${CHROMIUM:-/usr/bin/chromium}
  [ -x "$chromium" ] && return 0
  echo "ci: $chromium is missing; installing Debian's chromium"
  if ! { DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
         DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }; then
    echo "ci: failed: could not install chromium (the browser tests need it)" >&2
    return 1
  fi
  [ -x "$chromium" ] || { echo "ci: failed: chromium installed, but $chromium is not there" >&2; return 1; }
}

# pytest's exit status as CI's verdict. 5 is "no tests collected": a testpaths or -m expression
# that selects nothing must turn CI red, not pass it silently.
pytest_verdict() {
  local rc=$1
  case "$rc" in
    0) return 0 ;;
    5) echo "ci: failed: pytest collected no tests (exit 5): check testpaths and the -m expression" >&2
       return 1 ;;
    *) echo "ci: failed: the test command (venv, install, pytest) exited $rc" >&2
       return "$rc" ;;
  esac
}

# The documentation site builds without a warning (a broken link, a page outside the nav, a
# generated table whose record is gone): mkdocs comes with the dev extra.
build_docs() {
  if ! NO_MKDOCS_2_WARNING=1 .venv/bin/mkdocs build --strict --quiet --site-dir "$(mktemp -d)"; then
    echo "ci: failed: the documentation does not build (mkdocs build --strict)" >&2
    return 1
  fi
}
