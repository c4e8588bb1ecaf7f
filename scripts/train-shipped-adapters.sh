#!/usr/bin/env bash
# Retrain the two shipped adapters exactly as they were trained (the recipe is also recorded in
# each adapter's domain.toml and training.json). Needs ../shared/data for `finance`.
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED="${SHARED_DATA:-../shared/data}"
BIN="${CHATBOT:-.venv/bin/chatbot}"

if [[ "${1:-all}" == all || "${1:-}" == finance ]]; then
  # The AAPL, AMZN and MSFT filings only: INTC and NVDA stay held out for evaluation.
  KB=.chatbot/sec10q-train
  mkdir -p "$KB"
  for company in AAPL AMZN MSFT; do cp -u "$SHARED"/sec10q/docs/*"$company".pdf "$KB"/; done
  "$BIN" train --domain finance --raft "$SHARED/sec10q/qna_data.csv" --knowledge "$KB" \
    --display-name "Finance analyst" \
    --description "Equity-analyst voice for quarterly filings: exact figures with units and periods, cited." \
    --system-prompt "You are an equity research analyst. Answer in precise financial terms. State every figure with its unit and the period it covers, and cite the block each figure comes from." \
    --grounding "$SHARED/squad2/dev-v2.0.json" --grounding-examples 1600 --grounding-declines 0.1 \
    --epochs 1 --batch-size 4 --learning-rate 3e-4 --eval-every 40 --seed 0
  # Its own answerability fit (docs/evaluation.md, "An adapter's own fit"), made like the app's:
  # 400 questions of the SQuAD 2.0 articles the published eval never reads, the signal off.
  CHATBOT_ANSWERABILITY_THRESHOLD=0 "$BIN" eval --questions "$SHARED/squad2/dev-v2.0.json" \
    --articles 13 --skip-articles 3 --limit 400 --adapters finance --out .chatbot/finance-calibration
  "$BIN" calibrate .chatbot/finance-calibration/results.json --out adapters/finance/answerability.json
fi

if [[ "${1:-all}" == all || "${1:-}" == support ]]; then
  "$BIN" train --domain support --raft training/support/questions.jsonl --knowledge knowledge \
    --display-name "Helpdesk" \
    --description "Friendly step-by-step helpdesk voice for this app's own user guide." \
    --system-prompt "You are a friendly helpdesk agent for the hybrid-chatbot app. Greet briefly, then give short numbered steps the user can follow, and cite the block each step comes from." \
    --scope-folder user-guide --epochs 3 --batch-size 4 --seed 0
fi
