"""The scorer the payments saga calls before authorization.

    scorer = Scorer.load(artifact_dir, rules_path)        # once per worker; raises at start
    decision = scorer.score(tx, states)                   # features, rules, blocklist, model
    decisions = scorer.decide_many([(tx, scorer.features(tx, states)), ...])  # a batch: one model call
    scorer.update_states(states, tx)                      # then fold the tx in
    scorer.apply_label(card_state, merchant_state, label) # a FraudLabel record, when revealed
    scorer.blocklist.apply(BlockEntry.from_record(rec))   # from the compacted topic

`tx` is a dict: card_token, bin, merchant_id, amount_minor, currency, occurred_at
(aware UTC datetime), optional ip, device, email, country. A non-card method's tx
(streams/domain/methods.py `risk_fields`) has its instrument's key as card_token, its
`method`, and the fields its blocklists match; the card model scores cards, the
methods model every other method (the same vector plus the method's indicator), each
in one call per batch. `states` is a
`models.features.TxStates` (the lead loads each part from RocksDB with
`CardState.from_bytes` and friends and stores `to_bytes()` back).
"""

from __future__ import annotations

import math
import operator
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from threadpoolctl import ThreadpoolController

from models.blocklist import Blocklist, shipped_blocklist
from models.decision import FraudDecision, decide
from models.features import (
    FEATURE_NAMES,
    METHODS_MODEL_FEATURES,
    MODELLED_METHODS,
    N_FEATURES,
    CardState,
    FeatureInputError,
    FeatureVector,
    MerchantCounts,
    MerchantState,
    Txn,
    TxStates,
    apply_label,
    compute,
    is_event_time,
    make_txn,
    to_ms,
    update,
)
from models.policy import DEFAULT_RULES, Policy, RuleHit, evaluate_rules, load_policy
from models.train import SHIPPED_METHODS_ARTIFACT, LoadedModel, load_model, method_indicators

# One row never gains from OpenMP threads; on a busy machine their start-up made a
# single-row HistGradientBoosting call ~15x slower (13 ms vs 0.7 ms, measured).
_THREADS = ThreadpoolController()

#: Features that must be finite for the model to score; otherwise: rules-only fallback.
_REQUIRED = ("amount_major", "hour_of_day", "card_tx_total", "card_cnt_1h")
_required_of = operator.itemgetter(*(FEATURE_NAMES.index(n) for n in _REQUIRED))
# Rows per model call (streams.stages.risk.handle_batch splits a larger batch).
MAX_BATCH_ROWS = 4_096


@dataclass
class Scorer:
    model: LoadedModel | None
    policy: Policy
    shadow: LoadedModel | None = None
    blocklist: Blocklist = field(default_factory=Blocklist)
    # The other methods' model (models.train.train_methods_artifact); None: their rules
    # alone decide them (no score, not a fallback).
    methods_model: LoadedModel | None = None

    @classmethod
    def load(
        cls,
        artifact_dir: Path | str | None,
        rules_path: Path | str = DEFAULT_RULES,
        shadow_dir: Path | str | None = None,
        methods_dir: Path | str | None = SHIPPED_METHODS_ARTIFACT,
    ) -> Scorer:
        """Verify and load the card model (and the shadow model) and the other methods'
        model, load the rules and the shipped blocklist (sanctioned crypto addresses).
        Raises ModelArtifactError / PolicyError / BlocklistError with a clear message:
        call it at worker start. artifact_dir None: rules only (card decisions flagged
        fallback, no methods model either); methods_dir None: no methods model."""
        model = load_model(artifact_dir) if artifact_dir is not None else None
        shadow = load_model(shadow_dir) if shadow_dir is not None else None
        methods = (
            load_model(methods_dir, METHODS_MODEL_FEATURES)
            if artifact_dir is not None and methods_dir is not None
            else None
        )
        return cls(model, load_policy(rules_path), shadow, shipped_blocklist(), methods)

    def score(
        self, tx: Mapping[str, Any], states: TxStates, *, usable: bool = True, merchant: MerchantCounts | None = None
    ) -> FraudDecision:
        """Never raises on bad input: garbled features give the flagged rules-only fallback.
        `usable=False`: the caller could not read the stored states (garbled bytes), so
        features from them would lie; rules only, flagged. `merchant`: the merchant's
        counts from elsewhere (see models.features.compute), else `states.merchant`'s."""
        return self.decide_many([(tx, self.features(tx, states, usable=usable, merchant=merchant))])[0]

    def features(
        self,
        tx: Mapping[str, Any] | Txn,
        states: TxStates,
        *,
        usable: bool = True,
        merchant: MerchantCounts | None = None,
    ) -> FeatureVector | None:
        """The model's input for `tx` (the dict, or the `Txn` made of it) from the states
        before it, or None (rules only)."""
        if not usable:
            return None
        try:
            fv = compute(tx if isinstance(tx, Txn) else make_txn(tx), states, merchant)
        except FeatureInputError:
            return None
        return fv if all(map(math.isfinite, _required_of(fv))) else None

    def decide_many(self, items: Sequence[tuple[Mapping[str, Any], FeatureVector | None]]) -> list[FraudDecision]:
        """The decision of each (tx, features): the card model scores the cards' rows in
        one call and the methods model every other method's in one more (a batch costs
        about what one row does), rules and blocklist per tx."""
        assert len(items) <= MAX_BATCH_ROWS, len(items)
        methods = [tx.get("method") or "card" for tx, _ in items]
        covered = [m == "card" or (m in MODELLED_METHODS and self.methods_model is not None) for m in methods]
        keys = [None if fv is None or not c else _row_key(fv) for c, (_, fv) in zip(covered, items)]
        cards = [(k, fv) for k, m, (_, fv) in zip(keys, methods, items) if k is not None and m == "card"]
        others = [(k, fv, m) for k, m, (_, fv) in zip(keys, methods, items) if k is not None and m != "card"]
        scored = self._model_scores(cards)
        other_scores = self._methods_scores(others)
        decisions = []
        for key, method, modelled, (tx, fv) in zip(keys, methods, covered, items):
            score = shadow_score = None
            model = self.model if method == "card" else self.methods_model
            if key is not None:
                score, shadow_score = scored[key] if method == "card" else (other_scores[key, method], None)
            decisions.append(
                decide(
                    fv,
                    evaluate_rules(self.policy, tx, fv) + self._blocklist_hits(tx),
                    score,
                    self.policy.thresholds,
                    fallback_action=self.policy.fallback_action,
                    model_version=model.version if model else None,
                    rules_version=self.policy.version,
                    shadow_score=shadow_score,
                    shadow_version=self.shadow.version if self.shadow and method == "card" else None,
                    modelled=modelled,
                )
            )
        return decisions

    def _model_scores(
        self, rows: Sequence[tuple[bytes, FeatureVector]]
    ) -> dict[bytes, tuple[float | None, float | None]]:
        """(score, shadow score) by row key, in one model call (equal rows once)."""
        out: dict[bytes, tuple[float | None, float | None]] = {}
        todo = list(dict(rows).items())
        if todo:
            matrix = _matrix([k for k, _ in todo])
            with _THREADS.limit(limits=1, user_api="openmp"):
                pairs = zip(_scores(self.model, matrix), _scores(self.shadow, matrix), strict=True)
            out.update(zip((k for k, _ in todo), pairs, strict=True))
        return out

    def _methods_scores(
        self, rows: Sequence[tuple[bytes, FeatureVector, str]]
    ) -> dict[tuple[bytes, str], float | None]:
        """The methods model's score by (row key, method), in one call for every method."""
        todo = {(k, m): fv for k, fv, m in rows}
        if not todo:
            return {}
        matrix = np.hstack([_matrix([k for k, _ in todo]), method_indicators([m for _, m in todo])])
        with _THREADS.limit(limits=1, user_api="openmp"):
            return dict(zip(todo, _scores(self.methods_model, matrix), strict=True))

    def _blocklist_hits(self, tx: Mapping[str, Any]) -> tuple[RuleHit, ...]:
        at = tx.get("occurred_at")
        if not is_event_time(at):
            return ()  # no event time: blocks with expiry cannot be judged; rules still run
        return tuple(RuleHit(code, "decline") for code in self.blocklist.hits(tx, at))

    @staticmethod
    def update_states(states: TxStates, tx: Mapping[str, Any] | Txn) -> bool:
        """Fold the tx (the dict, or the `Txn` made of it) into its states after scoring.
        False (nothing changed) for a tx whose fields are garbled."""
        try:
            update(states, tx if isinstance(tx, Txn) else make_txn(tx))
        except FeatureInputError:
            return False
        return True

    @staticmethod
    def apply_label(card: CardState | None, merchant: MerchantState | None, label: Mapping[str, Any]) -> None:
        """A FraudLabel record, applied at its `occurred_at` (when it became known)."""
        apply_label(card, merchant, to_ms(label["occurred_at"]), bool(label["fraud"]))


def _row_key(fv: FeatureVector) -> bytes:
    # The row's bytes: equal rows are equal keys, NaN included (NaN != NaN as floats).
    return _ROW.pack(*fv)


_ROW = struct.Struct(f"={N_FEATURES}d")


def _matrix(keys: Sequence[bytes]) -> np.ndarray:
    """The rows whose `_row_key`s these are: their bytes are the float64 values, read in
    one C call (`np.asarray` over the vectors converted each float on its own)."""
    return np.frombuffer(bytearray(b"".join(keys)), dtype=np.float64).reshape(len(keys), N_FEATURES)


def _scores(model: LoadedModel | None, matrix: np.ndarray) -> list[float | None]:
    """One score per row; None for every row without a model. A batch the model
    refuses is scored row by row, so one bad row falls back alone."""
    if model is None:
        return [None] * len(matrix)
    try:
        return [float(x) for x in model.score(matrix)]
    except Exception:
        return [_score(model, matrix[i : i + 1]) for i in range(len(matrix))]


def _score(model: LoadedModel, row: np.ndarray) -> float | None:
    try:
        return float(model.score(row)[0])
    except Exception:  # a model that cannot score this row: rules-only fallback, flagged
        return None
