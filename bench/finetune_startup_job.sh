#!/bin/bash
# usage: finetune_startup_job.sh SRC TAG DATASET [TOK]: one demo fine-tune job in $DEMO_DIR (a clone whose
# upstream `snakemake -c2 all` has run) with the code of SRC (PYTHONPATH), tracking into a copy of
# $PROF_DIR/store0.db (copy the demo's results/mlflow.db there first); prints "cpu_user cpu_sys wall"
src=$1; tag=$2; ds=$3; tok=${4:-hrq}
cd ${DEMO_DIR:-/tmp/demo-d}
db=${PROF_DIR:-/tmp/prof}/db/$tag.db; mkdir -p ${PROF_DIR:-/tmp/prof}/db ${PROF_DIR:-/tmp/prof}/out/$tag
[ -f $db ] || cp ${PROF_DIR:-/tmp/prof}/store0.db $db
PYTHONPATH=$src MLFLOW_TRACKING_URI=sqlite:///$db /usr/bin/time -f "%U %S %e" -o ${PROF_DIR:-/tmp/prof}/out/$tag/$ds.time \
  /work/main/.venv/bin/python -m vqdna finetune --config results/config.resolved.json --tokenizer $tok --dataset $ds \
  --point lr0.001_do0_ep2 --seed 0 --data results/datasets/$ds --tokenizer-dir results/tokenizers/$tok \
  --backbone-dir results/pretrain/$tok --out ${PROF_DIR:-/tmp/prof}/out/$tag/$ds.json > ${PROF_DIR:-/tmp/prof}/out/$tag/$ds.log 2>&1
cat ${PROF_DIR:-/tmp/prof}/out/$tag/$ds.time
