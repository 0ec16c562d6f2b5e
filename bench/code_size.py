"""Lines of ``risk_monitor/`` per issue since issue 9 was filed: "smaller for the same features".

Issue 9 ("One risk truth") asks that the line count of ``risk_monitor/`` go down, not up, *for the
same features*. Later issues added features on the same code (per-tick evaluation, lineage,
alert routing, live trading...), so the raw count mixes both. This walks main's first-parent
history from the commit the issue was filed at and charges each step's line delta (``.py``
files under ``risk_monitor/``, generated ``proto/`` excluded; ``git diff --numstat``) to an
issue:

* a merge of a work branch is charged by the branch name (``BRANCH_ISSUE``): the merge's diff
  against its first parent is exactly what that branch added on top of main;
* a direct commit on main is charged by its hash (``COMMIT_ISSUE``).

Anything not in either table, and the defect fixes (``fixes``), are charged to issue 9: the
conservative side, since they count as "same features". Run from the repository root::

    python bench/code_size.py            # the table and the "same features" count
    python bench/code_size.py --steps    # every step with its charge

Caveat (said in the output too): a branch is charged whole. The issue-10 ``hotpath`` branch also
split the old hot path into quote intake, evaluator and writer (an issue-9 item), and the
issue-9 ``truth`` branch also wired trading and the Alertmanager sink as service components.
"""

from __future__ import annotations

import argparse
import re
import subprocess
from collections import defaultdict
from dataclasses import dataclass

#: main's head when issue 9 was filed (22,038 lines)
FILED_AT = "566e9bd"

BRANCH_ISSUE: dict[str, str] = {
    # 9: one risk truth (composition root, one rule each, smaller code)
    "truth": "9", "slim": "9", "slimdomain": "9", "slimadapters": "9", "slimservice": "9",
    "slimdomain2": "9", "slimadapters2": "9", "slimservice2": "9", "closeout": "fixes",
    "fixes": "fixes", "tidy": "fixes",
    # 10: hot path at the physical floor (and the batch / Dagster run cost items)
    "hotpath": "10", "hot": "10", "batch": "10", "writer": "10", "sqlfast": "10",
    "latency": "10", "memory": "10", "onetrip": "10", "tickloop": "10", "startup": "10",
    "dagster": "10", "commitfast": "10", "periodicoff": "10", "deliverfast": "10",
    "postinline": "10", "sealcpu": "10", "tickp99": "10", "commitpath": "10", "tickgil": "10",
    "evalscale": "10", "runlaunch": "10",
    "tickcpu": "10", "persistrows": "10", "changetxn": "10", "evalburst": "10",
    "splitmods": "9",  # module splits (code moved as is)
    "floor": "9",  # its production diff is "one rule, one place" clean-ups; the floor bench is bench/
    # 11: lineage and the tamper-evident trail
    "lineage": "11", "digest": "11",
    # 12: alerts a desk trusts
    "alerts": "12", "alerts2": "12", "alerts3": "12",
    # 13: live trading
    "trademon": "13", "tradesim": "13", "trading": "13", "inflight": "13", "fill": "13",
    # 15: the suite
    "suite": "15",
}

COMMIT_ISSUE: dict[str, str] = {
    "6b40551": "10",  # Fireblocks adapter imports only the API it uses (Dagster run cost)
    "66ed44a": "10",  # validation: one vectorised rule table (batch evaluation speed)
    "7bef51e": "10",  # Dagster run cost: defs walked once, pandera imported on failure
    "efa23e0": "10",  # lazy SDK packages generalised
    "edb2a3b": "10",  # int32 key codes (memory at 1M)
    "e3720b0": "10",  # key-code cache spot check
    "8af2bd7": "10",  # wildcard quote keys as a set
    "32a1d6a": "10",  # lazy packages without a lock across imports
    "37c1ba3": "10",  # hot path switch interval
    "00b9bf9": "10",  # feed close waits for its quote-cache flush
    "1a4ba9b": "11",  # audit chain: one multi-row insert per change
    "f96d8f4": "12",  # /readyz: Alertmanager delivery check
    "588d04a": "12",  # route copies delivered exactly once
    "46f655d": "12",  # alerts.warn_for_s
    "9dad273": "13",  # OKX fill fees from the private stream
}

MERGE = re.compile(r"^Merge (?:branch '(?P<branch>[^']+)'|(?P<word>[\w-]+))")


@dataclass(frozen=True)
class Step:
    commit: str
    subject: str
    delta: int
    issue: str
    charged_by: str  # branch, commit or default


def git(*args: str) -> str:
    return subprocess.run(["git", *args], check=True, capture_output=True, text=True).stdout


def line_delta(parent: str, commit: str) -> int:
    """Added minus deleted lines of risk_monitor/**.py (proto excluded) from parent to commit."""
    total = 0
    for row in git("diff", "--numstat", "--no-renames", parent, commit, "--", "risk_monitor").splitlines():
        added, deleted, path = row.split("\t", 2)
        if path.endswith(".py") and "/proto/" not in path and added != "-":
            total += int(added) - int(deleted)
    return total


def line_count(rev: str) -> int:
    """Newlines in risk_monitor/**.py at rev (proto excluded), as ``wc -l`` counts them."""
    files = [f for f in git("ls-tree", "-r", "--name-only", rev, "risk_monitor").split()
             if f.endswith(".py") and "/proto/" not in f]
    batch = subprocess.run(["git", "cat-file", "--batch"], check=True, capture_output=True,
                           input="\n".join(f"{rev}:{f}" for f in files).encode()).stdout
    total, at = 0, 0
    for _ in files:  # "<sha> blob <size>\n<content>\n" per file
        header_end = batch.index(b"\n", at)
        size = int(batch[at:header_end].split()[2])
        total += batch.count(b"\n", header_end + 1, header_end + 1 + size)
        at = header_end + 1 + size + 1
    return total


def steps(base: str, head: str) -> list[Step]:
    out = []
    log = git("log", "--first-parent", "--reverse", "--format=%H%x09%P%x09%s", f"{base}..{head}")
    for row in log.splitlines():
        commit, parents, subject = row.split("\t", 2)
        first_parent = parents.split()[0]
        match = MERGE.match(subject) if len(parents.split()) > 1 else None
        name = (match.group("branch") or match.group("word")) if match else None
        if name is not None and name in BRANCH_ISSUE:
            issue, by = BRANCH_ISSUE[name], f"branch {name}"
        elif commit[:7] in COMMIT_ISSUE:
            issue, by = COMMIT_ISSUE[commit[:7]], "commit"
        else:
            issue, by = "9", f"branch {name} (unlisted)" if name else "default"
        out.append(Step(commit[:7], subject, line_delta(first_parent, commit),
                        "9" if issue == "fixes" else issue, by))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--head", default="HEAD")
    parser.add_argument("--steps", action="store_true", help="print every step with its charge")
    args = parser.parse_args()
    at_filing, now = line_count(FILED_AT), line_count(args.head)
    history = steps(FILED_AT, args.head)
    by_issue: dict[str, int] = defaultdict(int)
    for step in history:
        by_issue[step.issue] += step.delta
        if args.steps:
            print(f"{step.delta:+6d}  #{step.issue:<3} {step.commit}  {step.charged_by:<28} "
                  f"{step.subject[:70]}")
    print(f"risk_monitor/ lines (.py, proto excluded): {at_filing:,} at {FILED_AT} "
          f"(issue 9 filed), {now:,} at {git('rev-parse', '--short', args.head).strip()}")
    print("| issue | lines added (+) or removed (-) since filing |")
    print("|---|---|")
    for issue in sorted(by_issue, key=int):
        print(f"| #{issue} | {by_issue[issue]:+,} |")
    assert at_filing + sum(by_issue.values()) == now, "the steps do not add up"
    same = at_filing + by_issue["9"]
    print(f"same features as at filing (filing count + issue 9's own steps, defect fixes and "
          f"anything unlisted): {same:,} ({same - at_filing:+,})")
    print("caveat: a branch is charged whole (hotpath, #10, also split the old hot path; truth, "
          "#9, also wired trading and the Alertmanager sink)")


if __name__ == "__main__":
    main()
