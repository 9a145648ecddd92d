"""The verl boundary: parquet export (export.py), the reward function (reward.py) and launch
scripts for both stages (stage1.sh, stage2.sh). verl itself is not a dependency."""
