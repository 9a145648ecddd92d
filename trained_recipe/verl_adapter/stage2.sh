#!/usr/bin/env bash
# dt-recipe stage 2 on verl: the hard cases, starting from the stage-1 checkpoint.
#
#   reward = acc + gated LLM-evaluator similarity (no embedding term, no format, no consistency);
#   KL reference = the stage-1 checkpoint (verl initialises the reference from MODEL_PATH).
#
# Hard cases: `dt-recipe select-hard --config trained_recipe/configs/stage2.yaml` (rollouts of the
# stage-1 model; keeps items whose pass rate is in hard_cases.band), or your own id list.
# Prepare (on any machine with this repo installed: pip install 'dt-eval[train]'):
#   dt-recipe export-verl --data avqa_train.jsonl --references refs.jsonl --stage 2 --hard-cases runs/stage2/hard_cases.jsonl --out $DATA/stage2_train.parquet
#   dt-recipe export-verl --data avqa_val.jsonl   --references refs.jsonl --stage 2 --hard-cases runs/stage2/hard_cases.jsonl --out $DATA/stage2_val.parquet --split val
# Serve the judge (OpenAI-compatible), e.g.:  vllm serve Qwen/Qwen3-235B-A22B-Instruct-2507 --port 8001
# Run:
#   MODEL_PATH=/ckpt/stage1_merged_hf DATA=$HOME/data/dt_recipe JUDGE_URL=http://judge:8001/v1 \
#   JUDGE_MODEL=Qwen/Qwen3-235B-A22B-Instruct-2507 bash trained_recipe/verl_adapter/stage2.sh [extra hydra overrides]
#
# ENGINE=verl (default): verl with audio support in RLHFDataset (data.audio_key=audios, "<audio>"
#   placeholders) and vLLM audio rollouts -- e.g. Qwen2-Audio / Qwen2.5-Omni.
# ENGINE=verl-omni: verl-omni (Qwen3-Omni thinker; VERL_USE_EXTERNAL_MODULES=verl_omni).
# ADV=gdpo (default; needs a verl with algorithm.adv_estimator=gdpo) or ADV=grpo (sum, then normalise).
# Not runnable on the CPU development machines: flags were checked against the verl and
# verl-omni sources, not by a run. After training, merge the FSDP shards into an HF directory
# (python -m verl.model_merger merge --backend fsdp --local_dir CKPT/actor --target_dir OUT) and
# evaluate it with:  dt-eval run --model OUT --backend hf --tasks mmau,mmar
set -euo pipefail

MODEL_PATH=${MODEL_PATH:?set MODEL_PATH (the stage-1 checkpoint as an HF dir)}
DATA=${DATA:?set DATA (folder with stage2_train.parquet and stage2_val.parquet)}
JUDGE_URL=${JUDGE_URL:?set JUDGE_URL (OpenAI-compatible judge endpoint, .../v1)}
JUDGE_MODEL=${JUDGE_MODEL:?set JUDGE_MODEL (served judge model name)}
ENGINE=${ENGINE:-verl}
ADV=${ADV:-gdpo}
NGPUS=${NGPUS:-8}
NNODES=${NNODES:-1}
ROLLOUT_N=${ROLLOUT_N:-8}             # G (paper: 8)
BATCH=${BATCH:-28}                    # prompts per step; 28 x 8 = 224 completions (paper's global batch)
LR=${LR:-1e-6}                        # paper
KL_COEF=${KL_COEF:-0.001}             # paper
MAX_RESPONSE=${MAX_RESPONSE:-2048}
EXP=${EXP:-dt_recipe_stage2}
REWARD_FILE=$(python3 -c 'import trained_recipe.verl_adapter.reward as m; print(m.__file__)')

ADV_ARGS=(algorithm.adv_estimator=grpo)
if [ "$ADV" = gdpo ]; then
  ADV_ARGS=(algorithm.adv_estimator=gdpo "+algorithm.gdpo_reward_keys=[acc,sim]")
fi

if [ "$ENGINE" = verl-omni ]; then
  export VERL_USE_EXTERNAL_MODULES=verl_omni
  ENTRY=(python3 -m verl_omni.trainer.main_omni
         data.custom_cls.path=pkg://verl_omni.utils.dataset.omni_rl_datasets
         data.custom_cls.name=QwenOmniRLHFDataset
         ++data.mm_processor_kwargs.sampling_rate=16000
         actor_rollout_ref.rollout.name=vllm_omni)
  RW=reward.custom_reward_function      # verl-omni's key
  MGR=(reward.reward_manager.source=register reward.reward_manager.name=batch)
else
  ENTRY=(python3 -m verl.trainer.main_ppo +data.audio_key=audios actor_rollout_ref.rollout.name=vllm)
  RW=custom_reward_function
  MGR=(reward_model.reward_manager=batch)
fi

"${ENTRY[@]}" \
  data.train_files="$DATA/stage2_train.parquet" \
  data.val_files="$DATA/stage2_val.parquet" \
  data.prompt_key=prompt \
  data.train_batch_size="$BATCH" \
  data.max_prompt_length=4096 \
  data.max_response_length="$MAX_RESPONSE" \
  data.filter_overlong_prompts=true \
  data.truncation=error \
  actor_rollout_ref.model.path="$MODEL_PATH" \
  actor_rollout_ref.model.enable_gradient_checkpointing=true \
  actor_rollout_ref.actor.optim.lr="$LR" \
  actor_rollout_ref.actor.ppo_mini_batch_size="$BATCH" \
  actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=1 \
  actor_rollout_ref.actor.use_kl_loss=true \
  actor_rollout_ref.actor.kl_loss_coef="$KL_COEF" \
  actor_rollout_ref.actor.kl_loss_type=low_var_kl \
  actor_rollout_ref.actor.loss_agg_mode=seq-mean-token-mean \
  actor_rollout_ref.actor.fsdp_config.param_offload=false \
  actor_rollout_ref.rollout.n="$ROLLOUT_N" \
  actor_rollout_ref.rollout.temperature=1.0 \
  actor_rollout_ref.rollout.gpu_memory_utilization=0.6 \
  actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=1 \
  actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu=1 \
  algorithm.use_kl_in_reward=false \
  "${ADV_ARGS[@]}" \
  "${MGR[@]}" \
  $RW.path="$REWARD_FILE" \
  $RW.name=compute_score_batch \
  +$RW.reward_kwargs.stage=2 \
  +$RW.reward_kwargs.judge_url="$JUDGE_URL" \
  +$RW.reward_kwargs.judge_model="$JUDGE_MODEL" \
  +$RW.reward_kwargs.max_failure_rate=0.2 \
  trainer.project_name=dt_recipe \
  trainer.experiment_name="$EXP" \
  trainer.n_gpus_per_node="$NGPUS" \
  trainer.nnodes="$NNODES" \
  trainer.save_freq=50 \
  trainer.test_freq=25 \
  trainer.total_epochs=1 \
  trainer.logger='["console"]' \
  "$@"
