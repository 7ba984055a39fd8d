# Sourced by the set-up scripts (not run): pip_install, which runs `$PY -m pip install --quiet` and keeps its
# exit code, and filter_pip_conflicts, which turns pip's expected resolver complaint into one line.
#
# Why there is an expected complaint: vllm and xgrammar are installed with --no-deps (their metadata pulls
# CUDA torch, flashinfer, numba, ...; see install-vllm-cpu.sh). After that, any pip install that touches
# one of their dependencies ends with
#   ERROR: pip's dependency resolver does not currently take into account all the packages that are installed. ...
#   vllm 0.33.0 requires torch==2.14.0, but you have torch 2.13.0+cpu which is incompatible.
#   vllm 0.33.0 requires numba==0.65.0, which is not installed.   (and ~40 more lines)
# and still exits 0. Those lines are dropped and counted; a conflict of any other package is printed as pip wrote it.

EXPECTED_CONFLICT_PACKAGES="${EXPECTED_CONFLICT_PACKAGES:-vllm|xgrammar|apache-tvm-ffi}"

filter_pip_conflicts() {
  awk -v expected_re="^(${EXPECTED_CONFLICT_PACKAGES})\$" '
    /^ERROR: pip.s dependency resolver does not currently take into account/ { block = 1; header = $0; next }
    block && $3 == "requires" {
      if (tolower($1) ~ expected_re) { expected++; next }
      if (header != "") { print header; header = "" }
      print; next
    }
    { block = 0; print }
    END {
      if (expected) printf "[pip] note: %d expected conflicts of vllm/xgrammar not shown (installed --no-deps, without their GPU stack; see scripts/pip-install.sh)\n", expected
    }
  '
}

pip_install() {
  local log rc=0
  log="$(mktemp)"
  PIP_ROOT_USER_ACTION=ignore "${PY:-python3}" -m pip install --disable-pip-version-check --quiet "$@" 2>"$log" || rc=$?
  filter_pip_conflicts <"$log" >&2
  rm -f "$log"
  return "$rc"
}
