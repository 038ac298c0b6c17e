"""The router: picks a provider for an authorization, retries and fails over, all
within one payment command, over a plain state value (`RoutingState`: one circuit
breaker per provider) that the payments stage persists per partition.

`Router.authorize(state, providers, cmd, key, call) -> Routed` (pure but for the
provider calls, which are idempotent by `key`):

1. Eligible routes: the payment method's rail kinds, the currency, the amount limit,
   and a breaker that lets a call through (closed, or open past its cool-down: a
   half-open route takes the next calls as its probes, ahead of the ranking).
2. Ranked by score = w_success * approval rate (of answered calls) - w_cost * fee share of the amount
   - w_latency * mean latency (s) - w_load * calls over capacity, over the breaker's
   rolling window, with a prior so a quiet route is neither perfect nor dead.
   Weights live in `routing.toml` (docs/routing.md).
3. Each route is tried up to `max_attempts` times, with jittered exponential backoff
   (deterministic: a hash of the key), *only* while the provider answers "retryable"
   (it promises it did not process the call). An answer (approved, declined) is final.
   A timeout (`unknown`) is final too: the payment stays pending at that provider and
   a status query under the same key resolves it. Never sent elsewhere.
4. A breaker that opens during the command, or the retries used up, send the call to
   the next route at once (no backoff across providers), within the time budget.
5. A *soft* decline (`soft_retry.codes`: the issuer or the acquirer may say yes
   elsewhere) goes once (`soft_retry.max_retries`) to the next eligible route, under
   the caller's second key (`soft_key`): a decline charged nothing, so at most one
   provider approves. A hard decline is final.
6. Learning (`Router.learn`, connectors/providers/learning.py): the route tried first
   is the Thompson-sampled, cost-aware choice for the payment's segment, when the
   segment has evidence enough and no route is half-open; else the ranking's.

Why no payment is authorized twice: a call goes to a second provider only after the
first said, for every attempt, that it processed nothing.
"""

from __future__ import annotations

import hashlib
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from connectors.providers.breaker import Breaker, BreakerConfig, Bucket, Transition, allow, record
from connectors.providers.learning import Arm, Learn, choose, observe, segment_of
from connectors.providers.rails import Pricing, RailConfig
from connectors.providers.simulated import Call, ProviderResult
from schemas.state import evolved, state_json, state_loads

DEFAULT_ROUTING = Path(__file__).parent / "routing.toml"
MAX_ROUTES = 64
MAX_ATTEMPTS = 10  # per route, whatever the file says
DEFAULT_METHOD = "card"


class RoutingConfigError(ValueError):
    """A routing file that cannot be used; the message names the file and the field."""


class Authorizer(Protocol):
    name: str

    def authorize(
        self, key: str, card_bin: str, card_last4: str, amount_minor: int, currency: str, call: Call | None = None
    ) -> ProviderResult: ...


@dataclass(frozen=True)
class Weights:
    success: float  # per unit of rolling approval rate (0..1)
    cost: float  # per unit of fee over amount (a 2.9 % fee is 0.029)
    latency: float  # per second of mean latency
    load: float  # per unit of window calls over the route's capacity in the window


@dataclass(frozen=True)
class Retry:
    max_attempts: int  # per route, for retryable answers only
    base_backoff_ms: int
    max_backoff_ms: int
    max_routes: int  # routes tried in one command
    budget_ms: int  # simulated time one command may spend on calls and backoff


@dataclass(frozen=True)
class SoftRetry:
    max_retries: int  # soft declines sent on to another route, per command (0: none)
    codes: frozenset[str]  # decline reasons that are soft; every other decline is hard


@dataclass(frozen=True)
class Route:
    """A provider as the router sees it: what it takes and what it costs (the contract)."""

    provider: str
    kind: str
    currencies: frozenset[str]
    max_amount_minor: int
    pricing: Pricing
    latency_prior_ms: int  # the contract's p50, until the window knows better
    capacity_per_min: int

    @classmethod
    def of(cls, rail: RailConfig, capacity_per_min: int) -> Route:
        return cls(
            rail.name,
            rail.kind,
            rail.currencies,
            rail.max_amount_minor,
            rail.pricing,
            rail.latency.p50_ms,
            capacity_per_min,
        )


@dataclass(frozen=True)
class RouterConfig:
    version: str
    weights: Weights
    breaker: BreakerConfig
    retry: Retry
    prior_calls: int
    prior_success: float
    methods: Mapping[str, tuple[str, ...]]  # payment method -> rail kinds
    capacity_per_min: Mapping[str, int]  # provider (or "default") -> calls per minute
    soft_retry: SoftRetry
    learn: Learn  # used when the router is built with learn=True (PAYSTREAM_ROUTING_LEARN)


@dataclass(frozen=True)
class RoutingState:
    """One breaker per provider and, when the router learns, the evidence per (segment,
    provider): the router's whole memory, persisted per partition."""

    breakers: tuple[Breaker, ...] = ()
    arms: tuple[Arm, ...] = ()

    def breaker(self, provider: str) -> Breaker:
        for b in self.breakers:
            if b.provider == provider:
                return b
        return Breaker(provider)

    def with_breaker(self, b: Breaker) -> RoutingState:
        others = tuple(x for x in self.breakers if x.provider != b.provider)
        return RoutingState(tuple(sorted(others + (b,), key=lambda x: x.provider)), self.arms)

    def to_json(self) -> bytes:
        return state_json(self)

    @classmethod
    def from_json(cls, data: bytes) -> RoutingState:
        raw = state_loads(data)
        return cls(
            tuple(Breaker(**{**b, "buckets": tuple(Bucket(**x) for x in b["buckets"])}) for b in raw["breakers"]),
            tuple(Arm(**a) for a in raw.get("arms", ())),
        )  # state from before learning has none


@dataclass(frozen=True)
class Attempt:
    provider: str
    attempt: int  # 1.. at this provider
    at_ms: int  # event time the call started (command time + simulated time spent)
    backoff_ms: int  # waited before this call
    status: str
    reason: str | None
    retryable: bool
    latency_ms: int


@dataclass(frozen=True)
class Routed:
    provider: str | None  # who holds the outcome (the last route tried); None: no route
    result: ProviderResult
    state: RoutingState
    attempts: tuple[Attempt, ...] = ()
    transitions: tuple[Transition, ...] = ()
    ranking: tuple[tuple[str, float], ...] = ()  # eligible routes by score, best first
    elapsed_ms: int = 0
    key: str | None = None  # the provider key of the deciding call (the soft retry's own key)
    learned: str | None = None  # the learning router's first choice; None: the ranking's
    soft_retries: int = 0  # soft declines sent on to another route

    @property
    def failovers(self) -> int:
        """Switches from one provider to the next within the command."""
        return sum(1 for a, b in zip(self.attempts, self.attempts[1:]) if a.provider != b.provider)


@dataclass(frozen=True)
class Router:
    config: RouterConfig
    routes: tuple[Route, ...]
    learn: Learn | None = None  # None: the rule router alone

    def __post_init__(self) -> None:
        names = [r.provider for r in self.routes]
        assert len(names) == len(set(names)) and 1 <= len(names) <= MAX_ROUTES, names

    def __call__(self, cmd: dict[str, Any]) -> str:
        """The best route for `cmd` from a fresh state (the saga's `route` hook shape)."""
        ranked = self.rank(RoutingState(), cmd, 0)
        if not ranked:
            raise LookupError(f"no route for {cmd.get('currency')} {_method(cmd)}")
        return ranked[0][0]

    def eligible(self, cmd: dict[str, Any]) -> tuple[Route, ...]:
        kinds = self.config.methods.get(_method(cmd), ())
        return tuple(
            r
            for r in self.routes
            if r.kind in kinds and cmd["currency"] in r.currencies and cmd["amount_minor"] <= r.max_amount_minor
        )

    def score(self, route: Route, b: Breaker, amount_minor: int) -> float:
        cfg, w = self.config, self.config.weights
        t = b.totals()
        # Approval rate among the calls the provider answered: availability (refusals,
        # timeouts) is the breaker's verdict, so a failing route is taken out and
        # probed, not quietly starved of the traffic that would show its recovery.
        answered = t.calls - t.failures
        success = (t.approvals + cfg.prior_success * cfg.prior_calls) / (answered + cfg.prior_calls)
        latency_s = (t.latency_ms + route.latency_prior_ms * cfg.prior_calls) / (t.calls + cfg.prior_calls) / 1000
        cost = route.pricing.fee_minor(amount_minor) / amount_minor
        load = t.calls / (route.capacity_per_min * cfg.breaker.window_ms / 60_000)
        return w.success * success - w.cost * cost - w.latency * latency_s - w.load * load

    def rank(self, state: RoutingState, cmd: dict[str, Any], at_ms: int) -> tuple[tuple[str, float], ...]:
        """Eligible routes whose breaker lets a call through at `at_ms`, best first; a
        half-open route first of all, since only its probes can close it again."""
        return tuple((name, score) for _, name, score in self._ranked(state, cmd, at_ms))

    def _ranked(
        self, state: RoutingState, cmd: dict[str, Any], at_ms: int, eligible: tuple[Route, ...] | None = None
    ) -> list[tuple[bool, str, float]]:
        """(closed, provider, score) of `rank`: closed is False for a half-open route.
        `eligible`: `self.eligible(cmd)`, when the caller has it."""
        scored = []
        for route in self.eligible(cmd) if eligible is None else eligible:
            ok, b, _ = allow(state.breaker(route.provider), self.config.breaker, at_ms)
            if ok:
                scored.append(
                    (b.state != "half_open", route.provider, round(self.score(route, b, cmd["amount_minor"]), 9))
                )
        return sorted(scored, key=lambda x: (x[0], -x[2], x[1]))

    def choice(
        self, state: RoutingState, cmd: dict[str, Any], payment_id: str, ranked: list[tuple[bool, str, float]]
    ) -> tuple[str | None, str | None]:
        """(segment, learned first route) for a create; (None, None) when the router does
        not learn. The learned route is None when the rule decides: too little evidence
        in the segment, or a half-open route whose probes must go first."""
        if self.learn is None:
            return None, None
        card_bin, _ = card_of(cmd)
        segment = segment_of(_method(cmd), card_bin, cmd["currency"], cmd["amount_minor"], self.learn)
        if not ranked or not all(closed for closed, _, _ in ranked):
            return segment, None
        fees = {r.provider: r.pricing.fee_minor(cmd["amount_minor"]) for r in self.routes}
        return segment, choose(
            state.arms,
            self.learn,
            segment,
            [(name, fees[name]) for _, name, _ in ranked],
            cmd["amount_minor"],
            payment_id,
        )

    def authorize(
        self,
        state: RoutingState,
        providers: Mapping[str, Authorizer],
        cmd: dict[str, Any],
        key: str,
        call: Call,
        soft_key: str | None = None,
    ) -> Routed:
        """`key`: the provider key of the authorization; `soft_key`: the one a soft
        decline's retry at another route is sent under (None: no soft retry)."""
        card_bin, card_last4 = card_of(cmd)
        eligible = self.eligible(cmd)
        if not eligible:
            return Routed(None, ProviderResult("declined", "no_route"), state)
        ranked = self._ranked(state, cmd, call.at_ms, eligible)
        ranking = tuple((name, score) for _, name, score in ranked)
        segment, learned = self.choice(state, cmd, call.payment_id, ranked)
        order = [name for name, _ in ranking]
        if learned is not None:
            order = [learned] + [name for name in order if name != learned]
        cfg, retry, soft = self.config.breaker, self.config.retry, self.config.soft_retry
        soft_retries = 0
        elapsed_ms = 0
        attempts: list[Attempt] = []
        transitions: list[Transition] = []
        last: str | None = None
        kept: tuple[str, str, ProviderResult] | None = None  # a soft decline sent on: the answer if no better one comes
        for provider in order[: retry.max_routes]:
            b = state.breaker(provider)
            backoff_ms = 0  # failover goes at once: the next route is a decision, not a wait
            final: ProviderResult | None = None
            for n in range(1, retry.max_attempts + 1):
                if elapsed_ms + backoff_ms >= retry.budget_ms:
                    break
                elapsed_ms += backoff_ms
                at_ms = call.at_ms + elapsed_ms
                ok, b, ts = allow(b, cfg, at_ms)
                transitions += ts
                if not ok:
                    break
                last = provider
                result = providers[provider].authorize(
                    key, card_bin, card_last4, cmd["amount_minor"], cmd["currency"], evolved(call, at_ms=at_ms)
                )
                elapsed_ms += result.latency_ms
                outcome = "timeout" if result.status == "unknown" else "failure" if result.retryable else "success"
                b, ts = record(b, cfg, call.at_ms + elapsed_ms, outcome, result.latency_ms, result.status == "approved")
                transitions += ts
                attempts.append(
                    Attempt(
                        provider,
                        n,
                        at_ms,
                        backoff_ms,
                        result.status,
                        result.reason,
                        result.retryable,
                        result.latency_ms,
                    )
                )
                if not result.retryable:  # an answer, or an unknown outcome: never sent elsewhere
                    final = result
                    break
                if b.state == "open":
                    break
                backoff_ms = self.backoff_ms(key, provider, n)
            state = state.with_breaker(b)
            if final is None:
                continue
            if segment is not None and self.learn is not None and final.status != "unknown":
                state = evolved(
                    state,
                    arms=observe(
                        state.arms, self.learn, segment, provider, final.status == "approved", call.at_ms + elapsed_ms
                    ),
                )
            if (
                final.status == "declined"
                and final.reason in soft.codes
                and soft_key is not None
                and soft_retries < soft.max_retries
            ):
                # Declined, nothing charged: another acquirer may approve, under its own key.
                soft_retries += 1
                kept, key = (provider, key, final), soft_key
                continue
            return Routed(
                provider,
                final,
                state,
                tuple(attempts),
                tuple(transitions),
                ranking,
                elapsed_ms,
                key,
                learned,
                soft_retries,
            )
        if kept is not None:  # the soft decline stands: the other routes did not answer
            provider, kept_key, result = kept
            return Routed(
                provider,
                result,
                state,
                tuple(attempts),
                tuple(transitions),
                ranking,
                elapsed_ms,
                kept_key,
                learned,
                soft_retries,
            )
        reason = "provider_unavailable" if ranking else "no_healthy_route"
        return Routed(
            last,
            ProviderResult("declined", reason, retryable=True),
            state,
            tuple(attempts),
            tuple(transitions),
            ranking,
            elapsed_ms,
            key,
            learned,
        )

    def backoff_ms(self, key: str, provider: str, attempt: int) -> int:
        """Exponential backoff with equal jitter, drawn from the key: half the step
        fixed, half spread, the same for the same call."""
        r = self.config.retry
        step = min(r.max_backoff_ms, r.base_backoff_ms * 2 ** (attempt - 1))
        digest = hashlib.sha256(f"{key}\x1f{provider}\x1f{attempt}".encode()).digest()
        return step // 2 + int.from_bytes(digest[:8], "big") % (step - step // 2 + 1)


def _method(cmd: dict[str, Any]) -> str:
    # The create's method (ValidatedCommand v5); a record from before it may name one in
    # its metadata (the old convention, docs/providers.md); everything else is a card.
    return cmd.get("method") or (cmd.get("metadata") or {}).get("payment_method", DEFAULT_METHOD)


def card_of(cmd: dict[str, Any]) -> tuple[str, str]:
    """(bin, last4) the rails key on; empty for a method without a card (wallet, bank, BNPL)."""
    card = cmd.get("card")
    return (card["bin"], card["last4"]) if card else ("", "")


# --- configuration ---


def load_router_config(path: Path | str = DEFAULT_ROUTING) -> RouterConfig:
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as e:
        raise RoutingConfigError(f"{path}: cannot read: {e}") from None
    except tomllib.TOMLDecodeError as e:
        raise RoutingConfigError(f"{path}: not TOML: {e}") from None
    try:
        cfg = RouterConfig(
            version=str(raw["version"]),
            weights=Weights(**{k: float(v) for k, v in raw["weights"].items()}),
            breaker=BreakerConfig(**raw["breaker"]),
            retry=Retry(**{k: int(v) for k, v in raw["retry"].items()}),
            prior_calls=int(raw["prior"]["calls"]),
            prior_success=float(raw["prior"]["success"]),
            methods={str(m): tuple(map(str, kinds)) for m, kinds in raw["methods"].items()},
            capacity_per_min={str(k): int(v) for k, v in raw["capacity_per_min"].items()},
            soft_retry=SoftRetry(
                int(raw["soft_retry"]["max_retries"]), frozenset(map(str, raw["soft_retry"]["codes"]))
            ),
            learn=_learn(raw["learn"]),
        )
    except KeyError as e:
        raise RoutingConfigError(f"{path}: missing {e.args[0]}") from None
    except (TypeError, ValueError) as e:
        raise RoutingConfigError(f"{path}: {e}") from None
    r, w = cfg.retry, cfg.weights
    problems = [
        m
        for m, bad in (
            ("weights must be >= 0", min(w.success, w.cost, w.latency, w.load) < 0),
            (f"retry.max_attempts must be 1..{MAX_ATTEMPTS}", not 1 <= r.max_attempts <= MAX_ATTEMPTS),
            (f"retry.max_routes must be 1..{MAX_ROUTES}", not 1 <= r.max_routes <= MAX_ROUTES),
            (
                "need 0 <= base_backoff_ms <= max_backoff_ms <= 60000",
                not 0 <= r.base_backoff_ms <= r.max_backoff_ms <= 60_000,
            ),
            ("retry.budget_ms must be 1..600000", not 1 <= r.budget_ms <= 600_000),
            (
                "prior.calls must be >= 1 and prior.success in [0, 1]",
                cfg.prior_calls < 1 or not 0 <= cfg.prior_success <= 1,
            ),
            (
                "capacity_per_min needs a default, every value >= 1",
                "default" not in cfg.capacity_per_min or min(cfg.capacity_per_min.values()) < 1,
            ),
            # once: a soft decline goes to one other acquirer, never round the whole table
            ("soft_retry.max_retries must be 0 or 1", cfg.soft_retry.max_retries not in (0, 1)),
        )
        if bad
    ]
    if problems:
        raise RoutingConfigError(f"{path}: {'; '.join(problems)}")
    return cfg


def _learn(raw: Mapping[str, Any]) -> Learn:
    return Learn(
        margin_bps=int(raw["margin_bps"]),
        min_observations=int(raw["min_observations"]),
        fine_observations=int(raw["fine_observations"]),
        decay_per_mille=int(raw["decay_per_mille"]),
        max_arms=int(raw["max_arms"]),
        amount_bands_minor=tuple(int(b) for b in raw["amount_bands_minor"]),
        bin_countries={str(k): str(v) for k, v in raw["bin_countries"].items()},
    )


def build_router(rails: Mapping[str, RailConfig], config: RouterConfig | None = None, *, learn: bool = False) -> Router:
    """A router over these rails (their contracts: kinds, currencies, pricing); `learn`:
    it learns per segment (the `[learn]` settings; PAYSTREAM_ROUTING_LEARN)."""
    cfg = config or load_router_config()
    cap = cfg.capacity_per_min
    return Router(
        cfg,
        tuple(Route.of(r, cap.get(name, cap["default"])) for name, r in sorted(rails.items())),
        cfg.learn if learn else None,
    )
