"""`paystream bench`: measure the pipeline against the broker's ceiling; JSON out."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from streams.client.broker import ensure_broker
from streams.settings import get_settings


def bench(
    quick: bool = typer.Option(False, "--quick", help="Small sizes (a few minutes); the full run takes longer"),
    json_file: Path | None = typer.Option(None, "--json", help="Write the results here as JSON"),
    plot_file: Path | None = typer.Option(None, "--plot", help="Draw throughput bars and latency curves to this PNG"),
    repeats: int = typer.Option(1, min=1, max=9, help="Ceiling runs; the median is reported"),
    rates: str = typer.Option(
        "", help="Offered rates for the latency part, commands/s, comma-separated (default 1000,2000,4000; quick 1000)"
    ),
    profile: Path | None = typer.Option(
        None, "--profile", help="py-spy the worker during the e2e run: FILE.svg a flame graph, else collapsed stacks"
    ),
    seed: int = typer.Option(7, help="Seed of the traffic"),
    peers: str = typer.Option(
        "ceiling,ours,quixstreams,faust", help="The stateful hop's peers to measure (streams/harness/bench_peers.py)"
    ),
) -> None:
    """Measure the pipeline against the broker's own ceiling (streams/harness/bench.py): JSON out."""

    from streams.harness.bench import MAX_RATE_PER_S, plot, run_bench
    from streams.harness.bench_peers import PEERS
    from streams.logs import setup_logging

    try:
        rates_per_s = tuple(int(r) for r in rates.split(",") if r.strip())
    except ValueError:
        raise typer.BadParameter(f"{rates!r}: integers separated by commas", param_hint="--rates") from None
    if any(not 0 < r <= MAX_RATE_PER_S for r in rates_per_s):
        raise typer.BadParameter(f"each rate must be in 1..{MAX_RATE_PER_S}", param_hint="--rates")
    setup_logging("warning", fmt="text")
    settings = get_settings()
    ensure_broker(settings)
    peer_names = tuple(p.strip() for p in peers.split(",") if p.strip())
    if not set(peer_names) <= set(PEERS):
        raise typer.BadParameter(f"peers are among {', '.join(PEERS)}", param_hint="--peers")
    result = run_bench(
        settings,
        quick=quick,
        seed=seed,
        repeats=repeats,
        rates_per_s=rates_per_s,
        profile=profile,
        peer_names=peer_names,
    )
    text = json.dumps(result, indent=2)
    if json_file is not None:
        json_file.write_text(text + "\n")
    if plot_file is not None:
        plot(result, plot_file)
    print(text)
