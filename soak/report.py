"""The soak's report: a short text on the console, results.json and results.md in ``--out``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from harness.proc import MMS_WORKER_THREADS
from soak.census import LONG_LIVED
from soak.traffic import KNOWN_ISSUES

ROLES = LONG_LIVED
TIMELINE_ROWS = 10


def write(result: dict[str, Any], out: Path) -> list[Path]:
    """Write results.json and results.md under ``out``; their paths."""
    out.mkdir(parents=True, exist_ok=True)
    as_json = out / "results.json"
    as_json.write_text(json.dumps(result, indent=2) + "\n")
    as_markdown = out / "results.md"
    as_markdown.write_text(markdown(result))
    return [as_json, as_markdown]


def text(result: dict[str, Any]) -> str:
    """The console summary: the verdict, outcomes, census and memory."""
    return markdown(result, headings=False)


def markdown(result: dict[str, Any], headings: bool = True) -> str:
    """The whole report as Markdown (plain enough to read on a terminal)."""
    title = "# Soak run\n\n" if headings else ""
    sections = [
        title + _settings(result),
        _verdict(result),
        _section("Outcomes", _outcomes(result), headings),
        _section("Leak census (no model loaded)", _census(result), headings),
        _section("Memory (MiB)", _memory(result), headings),
        _section("Private dirty memory during the traffic (MiB)", _timeline(result), headings),
        _section("Workers alive at the end of the traffic", _workers(result), headings),
    ]
    samples = result["traffic"]["unexpected_samples"] + result["warm_up"]["unexpected_samples"]
    if samples:
        sections.append(
            _section(
                "Unexpected outcomes and known issues (first ones)", _samples(samples), headings
            )
        )
    return "\n\n".join(sections) + "\n"


def _section(title: str, body: str, headings: bool) -> str:
    return f"## {title}\n\n{body}" if headings else f"{title}:\n{body}"


def _settings(result: dict[str, Any]) -> str:
    s = result["settings"]
    return (
        f"{result['traffic']['seconds']:.0f} s of traffic from {s['concurrency']} clients "
        f"over {s['models']} models (at most {s['max_loaded_models']} loaded), "
        f"{s['worker_mode']} workers, seed {s['seed']}, mix {s['mix']}; "
        f"started {result['started_at']}."
    )


def _verdict(result: dict[str, Any]) -> str:
    verdict = result["verdict"]
    if verdict["ok"]:
        known = result["traffic"]["known_issues"]
        return "**PASS**: no unexpected outcome, nothing leaked, clean exits" + (
            f" ({known} known issues, see below)." if known else "."
        )
    return "**FAIL**:\n" + "\n".join(f"- {reason}" for reason in verdict["reasons"])


def _table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def _outcomes(result: dict[str, Any]) -> str:
    traffic = result["traffic"]
    rows = [
        [row["operation"], row["result"], row["count"], row["verdict"], row["mean_s"], row["max_s"]]
        for row in result["warm_up"]["rows"] + traffic["rows"]
    ]
    seen = {(row["operation"], row["result"]) for row in traffic["rows"]}
    known = "".join(
        f"\n- known issue, {operation} {status}: {why}"
        for (operation, status), why in KNOWN_ISSUES.items()
        if (operation, status) in seen
    )
    metrics = result["endpoint_metrics"]
    failing = " (counted as unexpected: --strict)" if result["settings"]["strict"] else ""
    return (
        _table(["operation", "outcome", "count", "verdict", "mean s", "max s"], rows)
        + f"\n\n{traffic['total']} operations, {traffic['unexpected']} unexpected, "
        f"{traffic['known_issues']} known issues{failing}; "
        f"{traffic['checked']} of {traffic['answers']} answers checked. "
        f"The endpoint loaded {metrics.get('loads', 0):.0f} times and unloaded "
        f"{metrics.get('unloads', 0):.0f} times; its responses by status: "
        f"{metrics.get('responses', {})}.{known}"
    )


def _census(result: dict[str, Any]) -> str:
    start, end = result["census"]["start"], result["census"]["end"]
    rows: list[list[Any]] = [["processes", _counts(start["processes"]), _counts(end["processes"])]]
    for role in ROLES:
        if role in start["threads"] or role in end["threads"]:
            for what in ("threads", "fds"):
                rows.append([f"{role} {what}", _total(start, what, role), _total(end, what, role)])
    rows.append(
        [
            f"java: of its threads, idle MMS worker threads ({MMS_WORKER_THREADS})",
            start["threads"].get("java", {}).get(MMS_WORKER_THREADS, 0),
            end["threads"].get("java", {}).get(MMS_WORKER_THREADS, 0),
        ]
    )
    leaks = result["leaks"]
    verdict = "No leaks." if not leaks else "Leaks:\n" + "\n".join(f"- {leak}" for leak in leaks)
    after_stop = result["left_after_stop"]
    stopped = (
        f"After stopping: exit codes {result['exit_codes']}, "
        f"{len(after_stop)} processes left running{': ' if after_stop else ''}"
        f"{', '.join(map(str, after_stop))}."
    )
    return (
        _table(["", "after warm-up", "end"], rows) + f"\n\n{verdict} {stopped}\n\n"
        f"Threads of the JVM's and Netty's bounded pools (JIT, GC, event loops) are "
        f"reported, not judged; idle MMS worker threads must be gone "
        f"{result['settings']['settle_timeout_s']:g} s after the last UNLOAD at most."
    )


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{kind} {count}" for kind, count in counts.items()) or "none"


def _total(census: dict[str, Any], what: str, role: str) -> int:
    return sum(census[what].get(role, {}).values())


def _memory(result: dict[str, Any]) -> str:
    start, end = result["census"]["start"], result["census"]["end"]
    rows = [
        [
            role,
            *_change(start["memory"][role], end["memory"][role], "uss_mib"),
            *_change(start["memory"][role], end["memory"][role], "private_dirty_mib"),
            start["memory"][role]["rss_mib"],
            end["memory"][role]["rss_mib"],
        ]
        for role in ROLES
        if role in start["memory"] and role in end["memory"]
    ]
    collected = start["java_collected"] and end["java_collected"]
    return (
        _table(
            [
                "process",
                "USS start",
                "USS end",
                "USS change",
                "dirty start",
                "dirty end",
                "dirty change",
                "RSS start",
                "RSS end",
            ],
            rows,
        )
        + "\n\nStart: after the warm-up and its UNLOADs; end: after the traffic and its "
        "UNLOADs. Dirty: the private dirty part of USS (the clean part moves with other "
        "processes that map the same libraries). Java: "
        + (
            f"after a full GC (jcmd GC.run); its heap in use then: "
            f"{start['memory']['java'].get('heap_used_mib', '?')} -> "
            f"{end['memory']['java'].get('heap_used_mib', '?')} MiB."
            if collected
            else "as found (no jcmd here to run a full GC first), so its heap's growth may be "
            "garbage not yet collected."
        )
    )


def _timeline(result: dict[str, Any]) -> str:
    timeline = result["memory_timeline"]
    if not timeline:
        return "No samples (the traffic was shorter than one progress interval)."
    step = max(1, len(timeline) // TIMELINE_ROWS)
    shown = (
        timeline[::step]
        if timeline[::step][-1] is timeline[-1]
        else [*timeline[::step], timeline[-1]]
    )
    roles = [role for role in ROLES if role in timeline[0]]
    return _table(
        ["at s", *roles],
        [[sample["at_s"], *(sample.get(role, "-") for role in roles)] for sample in shown],
    ) + (
        "\n\nWith traffic running, so workers come and go: a steady climb over a long run is "
        "what to look for, not the level."
    )


def _change(start: dict[str, float], end: dict[str, float], key: str) -> list[float]:
    return [start[key], end[key], round(end[key] - start[key], 1)]


def _workers(result: dict[str, Any]) -> str:
    workers = result["workers"]
    rows = [
        [
            w["target"],
            w["pid"],
            _or_dash(w["first_seen_s"]),
            _mib(w["first"], "uss_mib"),
            w["end"]["uss_mib"],
            _mib(w["first"], "private_dirty_mib"),
            w["end"]["private_dirty_mib"],
            _mib(w["first"], "rss_mib"),
            w["end"]["rss_mib"],
        ]
        for w in workers["alive_at_end"]
    ]
    first = workers["first_uss_mib"]
    return (
        _table(
            [
                "model",
                "pid",
                "first seen s",
                "USS first",
                "USS end",
                "dirty first",
                "dirty end",
                "RSS first",
                "RSS end",
            ],
            rows,
        )
        + f"\n\n{workers['observed']} workers measured after their first answer: USS "
        f"min {first['min']}, median {first['median']}, max {first['max']} MiB. A worker "
        "counts with the child MMS forks for its connection (that child holds the model); "
        "a prefork launcher is not counted. First seen: seconds after the warm-up began; "
        "'-': not measured before the end."
    )


def _mib(memory: dict[str, float] | None, key: str) -> Any:
    return memory[key] if memory else "-"


def _or_dash(value: Any) -> Any:
    return "-" if value is None else value


def _samples(samples: list[dict[str, Any]]) -> str:
    return "\n".join(
        f"- at {s['at_s']} s: {s['operation']} -> {s['result']} "
        f"({s['seconds']} s): {s['detail'][:300]}"
        for s in samples
    )
