"""The scorer: the hot loop of every screening and search trial.

A `Scorer` is bound to a live model and tokenizer and one split. Between calls the model's weights may be
rewritten in place (a composition being tried); the scorer caches only the tokenization of the split,
never anything computed by the model, so every call reflects the current weights.

Two modes:
- `rank` (default): rank classification. Each input is encoded once; every label word sequence (with EOS)
  is scored by its summed log-probability under teacher forcing, all labels of a batch in one decoder
  pass over encoder states repeated per label. Prediction = best label; margin = gold log-probability
  minus the best other label's.
- `generate`: greedy decoding mapped back to a label word; anything else counts as wrong, as in T5.
  Margins are NaN in this mode (a generated string has no gold-label margin).

`score(prefix=n)` scores the first n examples of a fixed seeded permutation of the split, so prefixes are
nested: the examples of a small budget are always among those of a larger one (multi-fidelity pruning).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from transformers.cache_utils import DynamicCache, EncoderDecoderCache
from transformers.modeling_outputs import BaseModelOutput

from search.errors import DataError, SearchError
from search.scoring import backoff
from search.scoring.device import is_out_of_memory, release_cached_memory
from search.scoring.encoding import DEFAULT_MAX_INPUT_LENGTH, encode_split, label_token_ids, length_batches
from search.scoring.settings import ScorerSettings
from search.tasks.data import Split
from search.tasks.glue import INVALID_LABEL, get_task

Mode = Literal["rank", "generate"]

# Padded input tokens per batch. CPU matmuls are already efficient at ~1k rows, and smaller batches of
# length-sorted inputs waste less on padding; a GPU wants far larger batches to fill the device.
CPU_BATCH_TOKENS = 2048
GPU_BATCH_TOKENS = 65536
CPU_MAX_BATCH = 128
GPU_MAX_BATCH = 1024


@dataclass(frozen=True, eq=False)
class ScoreResult:
    """One scoring pass.

    Attributes:
        task: task name.
        split: split name (`search` or `heldout`).
        mode: `rank` or `generate`.
        n: number of examples scored (the prefix length).
        score: the paper's metric x100.
        metrics: every metric of the task x100 (incl. `score`).
        predictions: predicted GLUE label id per example (INVALID_LABEL for a non-label generation).
        margins: gold log-probability minus the best other label's (rank); NaN in generate mode.
        fingerprint: fingerprint of the split the examples come from.
        labels: gold label per example.
        positions: row of each example in `split.examples` (the prefix of the scorer's order).
        settings: scorer settings needed to reproduce the score (mode, order seed, truncation, autocast
            dtype, device type).
        label_logprobs: (n, n_labels) float32 summed log-probability of each label word per example, columns
            in the task's label id order (rank mode; empty in generate mode). Screening stores them for
            the surrogate (`search.study.surrogate`).
    """

    task: str
    split: str
    mode: str
    n: int
    score: float
    metrics: dict[str, float]
    predictions: np.ndarray
    margins: np.ndarray
    fingerprint: str
    labels: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    positions: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    settings: dict[str, Any] = field(default_factory=dict)
    label_logprobs: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), dtype=np.float32))

    def summary(self) -> dict[str, Any]:
        """JSON-ready dict without the per-example arrays."""
        return {
            "task": self.task,
            "split": self.split,
            "mode": self.mode,
            "n": self.n,
            "score": self.score,
            "metrics": dict(self.metrics),
            "fingerprint": self.fingerprint,
            "settings": dict(self.settings),
        }


class Scorer:
    """Scores a live model on one split; reflects in-place weight changes between calls.

    Args:
        model: a T5 seq2seq model (eval mode is set on each call).
        tokenizer: its tokenizer.
        split: the examples (from `search.tasks.data.load_split`).
        mode: `rank` (default) or `generate`.
        batch_tokens: padded input tokens per batch (dynamic batch size); None picks a default for the
            model's device. A batch that runs out of accelerator memory halves it and `max_batch` and is
            retried in smaller batches (said once per device on stderr); scores do not change.
        max_batch: cap on examples per batch; None picks a default for the model's device.
        max_input_length: truncation of inputs.
        order_seed: seed of the fixed permutation whose prefixes `score(prefix=n)` scores.
        autocast_dtype: e.g. `torch.bfloat16` to run under autocast; None (default) runs the model's dtype.

    Raises:
        DataError: for an empty split or labels outside the task's ids.
        ModelError: if a label word does not tokenize.
    """

    def __init__(
        self,
        model,
        tokenizer,
        split: Split,
        *,
        mode: Mode = "rank",
        batch_tokens: int | None = None,
        max_batch: int | None = None,
        max_input_length: int = DEFAULT_MAX_INPUT_LENGTH,
        order_seed: int = 0,
        autocast_dtype: torch.dtype | None = None,
    ) -> None:
        if mode not in ("rank", "generate"):
            raise DataError(f"unknown scoring mode {mode!r} (use rank or generate)")
        if len(split) == 0:
            raise DataError(f"{split.task}/{split.name}: empty split, nothing to score")
        self.model = model
        self.tokenizer = tokenizer
        self.split = split
        self.spec = get_task(split.task)
        self.mode = mode
        device = next(model.parameters()).device
        on_gpu = device.type != "cpu"
        learned = backoff.learned(device)  # a device that ran out of memory before: start where it fit
        if batch_tokens is None:
            batch_tokens = GPU_BATCH_TOKENS if on_gpu else CPU_BATCH_TOKENS
            batch_tokens = min(batch_tokens, learned[0]) if learned else batch_tokens
        if max_batch is None:
            max_batch = GPU_MAX_BATCH if on_gpu else CPU_MAX_BATCH
            max_batch = min(max_batch, learned[1]) if learned else max_batch
        self.batch_tokens = batch_tokens
        self.max_batch = max_batch
        self.max_input_length = max_input_length
        self.order_seed = order_seed
        self.autocast_dtype = autocast_dtype
        self.labels = split.examples["label"].to_numpy(dtype=np.int64)
        label_ids = np.asarray(self.spec.label_ids, dtype=np.int64)
        if not np.isin(self.labels, label_ids).all():
            raise DataError(f"{split.task}/{split.name}: labels outside {self.spec.label_ids}; cannot score")
        # Column k of the rank scores is label id spec.label_ids[k].
        self._label_col = np.searchsorted(label_ids, self.labels)
        self._label_ids = label_ids
        self.order = np.random.default_rng(order_seed).permutation(len(split)).astype(np.int64)
        self._encoded = encode_split(split, tokenizer, max_length=max_input_length)
        self._label_seqs = label_token_ids(self.spec, tokenizer)
        self._word_to_label = {w: lab for lab, w in self.spec.label_words.items()}
        self._batches: dict[int, list[np.ndarray]] = {}
        self._prepare_label_tensors()

    @classmethod
    def from_settings(
        cls,
        model,
        tokenizer,
        split: Split,
        settings: ScorerSettings,
        *,
        batch_tokens: int | None = None,
        max_batch: int | None = None,
    ) -> Scorer:
        """A scorer that scores as the one whose stored `settings` these are (a row being rebuilt).

        Mode, order seed, truncation and autocast come from the settings; batching is left to the device
        (it does not change a score). The split is the caller's: the settings say which data it came from.

        Raises:
            SearchError: for stored settings naming an unknown autocast dtype.
        """
        return cls(
            model,
            tokenizer,
            split,
            batch_tokens=batch_tokens,
            max_batch=max_batch,
            **settings.scorer_kwargs(),
        )

    def _prepare_label_tensors(self) -> None:
        seqs = self._label_seqs
        width = max(len(s) for s in seqs)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        start = self.model.config.decoder_start_token_id
        if start is None:
            start = pad
        targets = torch.full((len(seqs), width), pad, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.float32)
        for k, s in enumerate(seqs):
            targets[k, : len(s)] = torch.tensor(s)
            mask[k, : len(s)] = 1.0
        # Teacher forcing: the decoder sees the start token then the label shifted right; positions after
        # a label's EOS are masked out of the sum (causal attention keeps them from affecting the rest).
        dec_in = torch.cat([torch.full((len(seqs), 1), start, dtype=torch.long), targets[:, :-1]], dim=1)
        self._targets, self._target_mask, self._dec_in = targets, mask, dec_in

    @property
    def settings(self) -> dict[str, Any]:
        """What besides the weights and the split decides a score."""
        return {
            "mode": self.mode,
            "order_seed": self.order_seed,
            "max_input_length": self.max_input_length,
            "autocast": str(self.autocast_dtype).removeprefix("torch.") if self.autocast_dtype else None,
            "device": self._device().type,
            "label_words": [self.spec.label_words[k] for k in self.spec.label_ids],
        }

    def _device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _batches_for(self, n: int) -> list[np.ndarray]:
        """Batches of positions (into the first n of the order); cached per prefix length."""
        cached = self._batches.get(n)
        if cached is None:
            lengths = self._encoded.lengths[self.order[:n]]
            cached = length_batches(lengths, batch_tokens=self.batch_tokens, max_batch=self.max_batch)
            self._batches[n] = cached
        return cached

    def _autocast(self):
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self._device().type, dtype=self.autocast_dtype)

    def _inputs(self, rows: np.ndarray, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        width = int(self._encoded.lengths[rows].max())
        ids = torch.from_numpy(self._encoded.ids[rows, :width]).to(device)
        mask = (torch.arange(width) < torch.from_numpy(self._encoded.lengths[rows])[:, None]).to(device)
        return ids, mask.long()

    def _rank_batch(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Summed log-probability of every label sequence for each input: (batch, n_labels).

        Every label starts from the same decoder state (the start token), so that first step runs once
        per input; its cache (self-attention of step 0 and the cross-attention keys/values of the
        encoder states, the costly part) is then repeated per label and all label continuations run in
        one batched decoder pass with teacher forcing. Log-probabilities are over the full vocabulary.
        """
        n_labels, width = self._dec_in.shape
        batch = ids.shape[0]
        device = ids.device
        hidden = self.model.get_encoder()(input_ids=ids, attention_mask=mask).last_hidden_state
        cache = EncoderDecoderCache(DynamicCache(), DynamicCache())
        first = self.model(
            encoder_outputs=BaseModelOutput(last_hidden_state=hidden),
            attention_mask=mask,
            decoder_input_ids=self._dec_in[:1, :1].to(device).repeat(batch, 1),
            past_key_values=cache,
            use_cache=True,
        )
        targets = self._targets.to(device)
        step0 = first.logits[:, 0].float().log_softmax(-1)[:, targets[:, 0]]  # (batch, n_labels)
        if width == 1:
            return step0
        cache = first.past_key_values
        cache.batch_repeat_interleave(n_labels)
        rest = self.model(
            encoder_outputs=BaseModelOutput(last_hidden_state=hidden.repeat_interleave(n_labels, dim=0)),
            attention_mask=mask.repeat_interleave(n_labels, dim=0),
            decoder_input_ids=self._dec_in[:, 1:].to(device).repeat(batch, 1),
            past_key_values=cache,
            use_cache=True,
        )
        logits = rest.logits.float()
        tail = targets[:, 1:].repeat(batch, 1)
        token_logp = logits.gather(-1, tail.unsqueeze(-1)).squeeze(-1) - logits.logsumexp(-1)
        summed = (token_logp * self._target_mask[:, 1:].to(device).repeat(batch, 1)).sum(-1)
        return step0 + summed.view(batch, n_labels)

    def _generate_batch(self, ids: torch.Tensor, mask: torch.Tensor) -> np.ndarray:
        max_new = max(len(s) for s in self._label_seqs) + 2
        out = self.model.generate(
            input_ids=ids,
            attention_mask=mask,
            max_new_tokens=max_new,
            do_sample=False,
            num_beams=1,
        )
        texts = self.tokenizer.batch_decode(out, skip_special_tokens=True)
        return np.fromiter(
            (self._word_to_label.get(t.strip(), INVALID_LABEL) for t in texts),
            dtype=np.int64,
            count=len(texts),
        )

    def _run(self, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        positions = self.order[:n]
        preds = np.empty(n, dtype=np.int64)
        margins = np.full(n, np.nan, dtype=np.float64)
        logps = np.zeros((n if self.mode == "rank" else 0, len(self._label_ids)), dtype=np.float32)
        device = self._device()
        if self.model.training:  # eval() walks every module: measurable on pico models
            self.model.eval()
        # Batches still to score, next last: one that runs out of memory is split and its halves pushed.
        pending = self._batches_for(n)[::-1]
        with torch.inference_mode(), self._autocast():
            while pending:
                batch = pending.pop()
                if self._over_limits(positions[batch]):  # batched before a back-off: split, don't fail again
                    pending.extend(self._split(batch, positions[batch])[::-1])
                    continue
                out_of_memory = False
                try:
                    self._score_batch(batch, positions[batch], device, preds, margins, logps)
                except RuntimeError as exc:
                    if not is_out_of_memory(exc):
                        raise
                    out_of_memory = True  # handled below: leaving the block frees the batch's tensors
                if out_of_memory:
                    pending.extend(self._back_off(batch, positions[batch], device)[::-1])
        return preds, margins, logps

    def _score_batch(
        self,
        batch: np.ndarray,
        rows: np.ndarray,
        device: torch.device,
        preds: np.ndarray,
        margins: np.ndarray,
        logps: np.ndarray,
    ) -> None:
        """Score one batch (`batch`: indices into the prefix; `rows`: their split rows) into the arrays."""
        ids, mask = self._inputs(rows, device)
        if backoff.before_batch is not None:
            backoff.before_batch(len(rows), int(ids.numel()))
        if self.mode == "generate":
            preds[batch] = self._generate_batch(ids, mask)
            return
        logp = self._rank_batch(ids, mask).cpu().numpy().astype(np.float64)
        logps[batch] = logp
        preds[batch] = self._label_ids[logp.argmax(axis=1)]
        gold = self._label_col[rows]
        gold_logp = logp[np.arange(len(rows)), gold]
        others = logp.copy()
        others[np.arange(len(rows)), gold] = -np.inf
        margins[batch] = gold_logp - others.max(axis=1)

    def _back_off(self, batch: np.ndarray, rows: np.ndarray, device: torch.device) -> list[np.ndarray]:
        """After an out-of-memory error on `batch`: halve this scorer's batch limits (and, for scorers
        created later on the device, its defaults), and return the batch split under the new limits.

        Raises:
            SearchError: when the batch was a single example: nothing smaller can be tried.
        """
        release_cached_memory(device)
        if len(batch) == 1:
            tokens = int(self._encoded.lengths[rows[0]])
            raise SearchError(
                f"{self.split.task}/{self.split.name}: one example ({tokens} input tokens) does not fit in "
                f"the memory of {device}; score on another device (--device cpu) or free the GPU"
            )
        self.max_batch = max(1, min(self.max_batch, len(batch)) // 2)
        self.batch_tokens = max(1, self.batch_tokens // 2)
        self._batches.clear()  # later calls batch under the new limits
        backoff.record(device, batch_tokens=self.batch_tokens, max_batch=self.max_batch)
        return self._split(batch, rows)

    def _over_limits(self, rows: np.ndarray) -> bool:
        """Whether a batch of `rows` is larger than the current limits allow."""
        longest = max(int(self._encoded.lengths[rows].max()), 1)
        return len(rows) > max(1, min(self.max_batch, self.batch_tokens // longest))

    def _split(self, batch: np.ndarray, rows: np.ndarray) -> list[np.ndarray]:
        """`batch` (whose split rows are `rows`) in batches under the current limits."""
        parts = length_batches(
            self._encoded.lengths[rows], batch_tokens=self.batch_tokens, max_batch=self.max_batch
        )
        return [batch[part] for part in parts]

    def score(self, *, prefix: int | None = None) -> ScoreResult:
        """Score the first `prefix` examples of the fixed order (all when None) with the current weights.

        Args:
            prefix: number of examples (1..len(split)); None scores the whole split.

        Returns:
            Metrics, per-example predictions and margins in the order's prefix order.

        Raises:
            DataError: if prefix is out of range.
        """
        total = len(self.split)
        n = total if prefix is None else int(prefix)
        if not 1 <= n <= total:
            raise DataError(f"{self.split.task}/{self.split.name}: prefix {prefix} outside 1..{total}")
        preds, margins, logps = self._run(n)
        labels = self.labels[self.order[:n]]
        metrics = self.spec.compute_metrics(labels, preds)
        return ScoreResult(
            task=self.split.task,
            split=self.split.name,
            mode=self.mode,
            n=n,
            score=metrics["score"],
            metrics=metrics,
            predictions=preds,
            margins=margins,
            fingerprint=self.split.fingerprint,
            labels=labels,
            positions=self.order[:n].copy(),
            settings=self.settings,
            label_logprobs=logps,
        )
