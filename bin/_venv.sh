# Sourced by bin/dev and bin/test: the project's virtualenv, created and kept in step with the
# pinned requirements. KINETIC_VENV points at another one (CI makes a fresh one per run).
venv="${KINETIC_VENV:-.venv}"
lock="requirements/dev.txt"
if [ ! -x "$venv/bin/python" ]; then
  echo "Creating a virtualenv in $venv (Python 3.11)…" >&2
  "${PYTHON:-python3.11}" -m venv "$venv"
fi
stamp="$venv/.installed-$(sha256sum "$lock" | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  echo "Installing pinned dependencies from $lock…" >&2
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$lock"
  rm -f "$venv"/.installed-* && touch "$stamp"
fi
python="$venv/bin/python"
