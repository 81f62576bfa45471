# Shared by scripts/demo, scripts/test and scripts/bench (sourced, not run).
# Creates .venv on first use and installs the project with what the caller asks for;
# re-installs when pyproject.toml changes, or when the virtualenv's jobtrack is another
# checkout's.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${JOBTRACK_VENV:-$ROOT/.venv}"
PY="$VENV/bin/python"

ensure_venv() {  # $1: what to install, e.g. "." or ".[redis] --group dev"
    local want="$1" stamp="$VENV/.jobtrack-installed" sig
    sig="$(cat "$ROOT/pyproject.toml" | sha256sum | cut -c1-16) $want"
    # The editable install points at one checkout: another checkout's scripts run with
    # this virtualenv (JOBTRACK_VENV) may have pointed it at theirs. Asked of the
    # interpreter itself (-I: PYTHONPATH left out), both sides with symlinks resolved.
    local here found
    here="$(cd "$ROOT" && pwd -P)/jobtrack/__init__.py"
    found=""
    if [ -x "$PY" ]; then
        found="$("$PY" -I -c 'import importlib.util as u, os; s = u.find_spec("jobtrack")
print(os.path.realpath(s.origin) if s and s.origin else "")' 2>/dev/null || true)"
    fi
    if [ -x "$PY" ] && [ -f "$stamp" ] && grep -qxF -- "$sig" "$stamp" && [ "$found" = "$here" ]; then
        return 0
    fi
    if [ ! -x "$PY" ]; then
        echo "==> creating virtualenv $VENV"
        python3 -m venv "$VENV"
    fi
    echo "==> installing jobtrack ($want)"
    "$PY" -m pip install --quiet --disable-pip-version-check --upgrade "pip>=25.1"
    # shellcheck disable=SC2086
    (cd "$ROOT" && "$PY" -m pip install --quiet --disable-pip-version-check -e $want)
    echo "$sig" >> "$stamp"
}

# mysqlclient (Django's MySQL driver, for the Django tests and the bench on MariaDB)
# builds against MariaDB's client headers: Debian's libmariadb-dev. Called before
# ensure_venv by the scripts that install the django extra.
ensure_mysqlclient_headers() {
    if ! pkg-config --exists libmariadb 2>/dev/null && command -v apt-get >/dev/null; then
        echo "==> installing MariaDB's client headers (libmariadb-dev) for mysqlclient"
        local SUDO=""
        if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null; then SUDO="sudo"; fi
        export DEBIAN_FRONTEND=noninteractive
        $SUDO apt-get install -y -q --no-install-recommends libmariadb-dev pkg-config >/dev/null 2>&1 ||
            { $SUDO apt-get update -q >/dev/null 2>&1 &&
              $SUDO apt-get install -y -q --no-install-recommends libmariadb-dev pkg-config >/dev/null 2>&1; } || true
    fi
}
