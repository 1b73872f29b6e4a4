#!/usr/bin/env bash
# Train the real-photo teachers and the scratch-student probe one after the other on ONE
# CPU thread, resumable: rerun the same command in a later session and every run continues from
# its last training state (--auto_resume); a run whose net_g_latest.pth exists is skipped.
#
#   RUNS=<runs folder> CODE=<runs folder>/code PY=<checkout>/.venv/bin/python \
#     nohup bash bench/photo/train_teachers.sh > <runs folder>/train_teachers.log 2>&1 &
#
# (bench/photo/README.md, "Commands": the snapshot is made with git archive.)
#
# RUNS is the working folder (CWD of BasicSR: datasets/photos and experiments/ live there);
# CODE a snapshot copy of the repository (so edits elsewhere cannot break a running job);
# OPTS the option files to run, in order (default: EDSR teacher, scratch-student probe, RCAN teacher:
# the short probe runs second so the EDSR gap is known before the RCAN run starts).
set -u
RUNS=${RUNS:?set RUNS to the runs folder (bench/photo/README.md, "Commands")}
CODE=${CODE:-$RUNS/code}
PY=${PY:-python}
OPTS=${OPTS:-"bench/photo/teacher_edsr.yml bench/photo/student_scratch_probe.yml bench/photo/teacher_rcan.yml"}
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 PYTHONPATH="$CODE"
cd "$RUNS" || exit 1
[ -d datasets/photos/train ] || { echo "missing $RUNS/datasets/photos (python -m kdsr_plugins.data_prep photos)"; exit 1; }
for opt in $OPTS; do
  yml="$CODE/$opt"
  name=$(sed -n 's/^name: *//p' "$yml" | head -1)
  if [ -f "experiments/$name/models/net_g_latest.pth" ]; then
    echo "$(date -u +%FT%TZ) $name: finished before, skipped"
    continue
  fi
  echo "$(date -u +%FT%TZ) $name: start/resume ($yml)"
  "$PY" -m kdsr_plugins.train -opt "$yml" --auto_resume >> "$RUNS/$name.log" 2>&1
  rc=$?
  echo "$(date -u +%FT%TZ) $name: exit $rc"
  [ $rc -eq 0 ] || exit $rc
done
echo "$(date -u +%FT%TZ) all done"
