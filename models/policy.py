"""Rules and decision thresholds from a versioned TOML file (`models/rules/v2.toml`),
evaluated as pure functions: `evaluate_rules(policy, tx, fv) -> tuple[RuleHit, ...]`."""

from __future__ import annotations

import math
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from models.features import FEATURE_NAMES, METHOD_FEATURES, FeatureVector
from schemas.money import is_currency

#: Actions from least to most strict. A decision takes the strictest that applies.
ACTIONS = ("approve", "requires_action", "review", "decline")
SEVERITY = {a: i for i, a in enumerate(ACTIONS)}
# The rule set a worker starts with; earlier versions stay beside it (docs/fraud.md).
DEFAULT_RULES = Path(__file__).parent / "rules" / "v3.toml"
MAX_RULES = 1_000
_CODE = re.compile(r"^[a-z][a-z0-9_]{1,63}$")
_BIN = re.compile(r"^[0-9]{1,8}$")
_COUNTRY = re.compile(r"^[A-Z]{2}$")


class PolicyError(ValueError):
    """A rules file that cannot be used; the message names the file and the field."""


@dataclass(frozen=True)
class RuleHit:
    code: str
    action: str


@dataclass(frozen=True)
class VelocityRule:
    code: str
    feature_index: int
    max: float
    action: str


@dataclass(frozen=True)
class Thresholds:
    requires_action: float
    review: float
    decline: float

    def action_for(self, score: float) -> str:
        if score >= self.decline:
            return "decline"
        if score >= self.review:
            return "review"
        if score >= self.requires_action:
            return "requires_action"
        return "approve"


@dataclass(frozen=True)
class Policy:
    version: str
    thresholds: Thresholds
    fallback_action: str
    velocity: tuple[VelocityRule, ...]
    amount_limits: Mapping[str, tuple[int, int]]  # currency -> (review_minor, decline_minor)
    countries_decline: frozenset[str]
    countries_review: frozenset[str]
    bins_decline: tuple[str, ...]
    bins_review: tuple[str, ...]
    # method -> its velocity rules (`[methods.<m>]`, v3): they replace the card's
    # `[[velocity]]` for a create of that method; amount and country rules apply to all.
    method_velocity: Mapping[str, tuple[VelocityRule, ...]] = field(default_factory=dict)

    def velocity_for(self, method: str) -> tuple[VelocityRule, ...]:
        return self.velocity if method not in METHOD_FEATURES else self.method_velocity.get(method, ())


def load_policy(path: Path | str = DEFAULT_RULES) -> Policy:
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as e:
        raise PolicyError(f"{path}: cannot read: {e}") from None
    except tomllib.TOMLDecodeError as e:
        raise PolicyError(f"{path}: not TOML: {e}") from None
    try:
        return _parse(raw)
    except (KeyError, TypeError, ValueError) as e:
        raise PolicyError(f"{path}: {type(e).__name__}: {e}") from None


def _action(value: Any, where: str) -> str:
    if value not in SEVERITY:
        raise ValueError(f"{where}: action {value!r} is not one of {ACTIONS}")
    return value


def _parse(raw: dict[str, Any]) -> Policy:
    version = raw["version"]
    if not isinstance(version, str) or not version:
        raise ValueError("version must be a non-empty string")
    th = raw["thresholds"]
    thresholds = Thresholds(float(th["requires_action"]), float(th["review"]), float(th["decline"]))
    if not 0.0 <= thresholds.requires_action <= thresholds.review <= thresholds.decline <= 1.0:
        raise ValueError("thresholds must satisfy 0 <= requires_action <= review <= decline <= 1")
    fallback = _action(raw["fallback"]["action"], "fallback")

    velocity = _velocity(raw.get("velocity", []), "velocity", {n: n for n in FEATURE_NAMES})
    methods = raw.get("methods", {})
    unknown = set(methods) - set(METHOD_FEATURES)
    if unknown:
        raise ValueError(f"methods: {sorted(unknown)} are not among {sorted(METHOD_FEATURES)}")
    method_velocity = {
        m: _velocity(methods[m].get("velocity", []), f"methods.{m}.velocity", METHOD_FEATURES[m]) for m in methods
    }

    limits: dict[str, tuple[int, int]] = {}
    for currency, lim in raw.get("amount_limits", {}).items():
        if not is_currency(currency):
            raise ValueError(f"amount_limits: {currency!r} is not ISO 4217")
        review, decline = lim["review_minor"], lim["decline_minor"]
        if not all(isinstance(x, int) and not isinstance(x, bool) and x > 0 for x in (review, decline)):
            raise ValueError(f"amount_limits.{currency}: limits must be positive integers (minor units)")
        if review > decline:
            raise ValueError(f"amount_limits.{currency}: review_minor > decline_minor")
        limits[currency] = (review, decline)

    countries = raw.get("countries", {})
    bins = raw.get("bins", {})
    for name, values, pattern in (
        ("countries.decline", countries.get("decline", []), _COUNTRY),
        ("countries.review", countries.get("review", []), _COUNTRY),
        ("bins.decline", bins.get("decline", []), _BIN),
        ("bins.review", bins.get("review", []), _BIN),
    ):
        if not isinstance(values, list) or not all(isinstance(x, str) and pattern.match(x) for x in values):
            raise ValueError(f"{name}: bad entries {values!r}")
    n_rules = (
        len(velocity)
        + sum(map(len, method_velocity.values()))
        + len(limits)
        + sum(len(x) for x in (*countries.values(), *bins.values()))
    )
    if n_rules > MAX_RULES:
        raise ValueError(f"{n_rules} rules is over the bound of {MAX_RULES}")
    return Policy(
        version=version,
        thresholds=thresholds,
        fallback_action=fallback,
        velocity=tuple(velocity),
        amount_limits=limits,
        countries_decline=frozenset(countries.get("decline", [])),
        countries_review=frozenset(countries.get("review", [])),
        bins_decline=tuple(bins.get("decline", [])),
        bins_review=tuple(bins.get("review", [])),
        method_velocity=method_velocity,
    )


def _velocity(rules: Any, where: str, names: Mapping[str, str]) -> tuple[VelocityRule, ...]:
    """Velocity rules on the named features (`names`: feature name -> vector column)."""
    if not isinstance(rules, list):
        raise ValueError(f"{where}: must be a list of tables")
    out = []
    for i, v in enumerate(rules):
        code = v["code"]
        if not isinstance(code, str) or not _CODE.match(code):
            raise ValueError(f"{where}[{i}]: bad code {code!r}")
        if v["feature"] not in names:
            raise ValueError(f"{where}[{i}]: unknown feature {v['feature']!r}")
        limit = v["max"]
        if not isinstance(limit, (int, float)) or isinstance(limit, bool) or limit < 0:
            raise ValueError(f"{where}[{i}]: max must be a non-negative number")
        out.append(
            VelocityRule(code, FEATURE_NAMES.index(names[v["feature"]]), float(limit), _action(v["action"], code))
        )
    return tuple(out)


def evaluate_rules(policy: Policy, tx: Mapping[str, Any], fv: FeatureVector | None) -> tuple[RuleHit, ...]:
    """Every rule the transaction trips. Velocity rules need features; without them
    (fallback) only the rules on the transaction's own fields run. Fields that are
    missing or of the wrong type simply do not trip their rule."""
    hits: list[RuleHit] = []
    if fv is not None:
        method = tx.get("method") or "card"
        for rule in policy.velocity_for(method if isinstance(method, str) else "card"):
            value = fv[rule.feature_index]
            if not math.isnan(value) and value > rule.max:
                hits.append(RuleHit(rule.code, rule.action))
    amount, currency = tx.get("amount_minor"), tx.get("currency")
    limit = policy.amount_limits.get(currency) if isinstance(currency, str) else None
    if limit is not None and isinstance(amount, int) and not isinstance(amount, bool):
        if amount > limit[1]:
            hits.append(RuleHit("amount_over_decline_limit", "decline"))
        elif amount > limit[0]:
            hits.append(RuleHit("amount_over_review_limit", "review"))
    country = tx.get("country")
    if isinstance(country, str):
        if country in policy.countries_decline:
            hits.append(RuleHit("country_declined", "decline"))
        elif country in policy.countries_review:
            hits.append(RuleHit("country_review", "review"))
    bin_ = tx.get("bin")
    if isinstance(bin_, str):
        if bin_.startswith(policy.bins_decline) and policy.bins_decline:
            hits.append(RuleHit("bin_declined", "decline"))
        elif bin_.startswith(policy.bins_review) and policy.bins_review:
            hits.append(RuleHit("bin_review", "review"))
    return tuple(hits)
