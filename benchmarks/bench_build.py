"""Build benchmark: a generated 1,000-item, 50-feed project, timed per stage against a floor.

Usage (from the repository root; not part of the test suite):

    python benchmarks/bench_build.py [--items 1000] [--feeds 50] [--entries 200] [--repeat 3]
                                     [--now 2026-11-16T09:00:00+01:00] [--save] [--keep]
                                     [--profile cold|warm] [--check]

What it does, all in one process:

1. Generates a temporary project: a `newsletter.toml` with the repository's identity, sender,
   footer, selection rules and sections, plus `--feeds` local feeds (`path = ...`; half RSS 2.0,
   half Atom) of `--entries` entries each (HTML summaries of 300-800 bytes with links, an image,
   inline tags; dates spread over the issue's month and the five months before); `--items`
   content items spread over every kind (milestones, calls, projects, events, news, contacts)
   with front matter and Markdown bodies, about a third with a `.ja.md` translation; and a copy
   of the repository's `templates/`.
2. Times, `--repeat` times, each measure in a fresh Python process (as `newsletter build` runs;
   imports are done before the clock starts), and reports the median of each:
   * the floor: what any tool must at least do - parse every feed with feedparser
     (`sanitize_html=False, resolve_relative_uris=False`, the fastest it goes) and inline the
     finished issue's HTML with premailer once per language (newsletter.inline.inline_css on
     the pre-inline HTML that newsletter.render produces for this project);
   * a first (cold) build: `newsletter.build.build()` with empty `.newsletter/` and `outbox/`;
   * a second build with nothing changed (a new process, as a second `newsletter build`);
   * for information, one more build in that same process (what `watch`/`preview` see).
   Each build is reported per stage (BuildResult.timings), as wall time around `build()` and as
   process CPU time (all threads).
3. Prints the ratios against the targets of issue 2, on wall and on CPU time: first build <=
   1.5 x floor, second build < 0.20 x first build. `--check` exits 1 when a target is missed.
   When other processes load the machine, wall times are noisy; the CPU ratios hold up better.

Options: `--save` writes the results as JSON to benchmarks/results/ (gitignored); `--keep` keeps
the generated project and prints its path; `--profile cold|warm` runs one extra build of that
kind under cProfile and prints the top functions (by cumulative and by own time).
"""

from __future__ import annotations

import argparse
import cProfile
import html
import io
import json
import os
import platform
import pstats
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import feedparser  # noqa: E402

from newsletter.build import build, load_inputs  # noqa: E402
from newsletter.config import load_config  # noqa: E402
from newsletter.dates import Period  # noqa: E402
from newsletter.inline import inline_css  # noqa: E402
from newsletter.project import Project  # noqa: E402
from newsletter.render import make_environment, render_issue  # noqa: E402
from newsletter.select import select_issue  # noqa: E402

STAGES = ("load", "ingest", "select", "render", "inline", "outbox")
TARGET_FIRST_VS_FLOOR = 1.5
TARGET_SECOND_VS_FIRST = 0.20
DEFAULT_NOW = "2026-11-16T09:00:00+01:00"

# --- generated text -----------------------------------------------------------------------------

WORDS = [
    "research",
    "innovation",
    "cooperation",
    "quantum",
    "materials",
    "battery",
    "hydrogen",
    "semiconductor",
    "robotics",
    "health",
    "ageing",
    "climate",
    "ocean",
    "observation",
    "fusion",
    "photonics",
    "mobility",
    "data",
    "artificial",
    "intelligence",
    "consortium",
    "partners",
    "laboratory",
    "university",
    "agency",
    "programme",
    "funding",
    "grant",
    "pilot",
    "platform",
    "network",
    "researchers",
    "exchange",
    "joint",
    "committee",
    "workshop",
    "results",
    "open",
    "science",
    "infrastructure",
    "supercomputing",
    "critical",
    "raw",
    "materials",
    "recycling",
    "circular",
    "economy",
    "sensors",
    "satellite",
    "earth",
    "biodiversity",
    "agriculture",
    "food",
    "security",
    "energy",
    "storage",
    "grid",
    "offshore",
    "wind",
    "standards",
    "interoperability",
    "cybersecurity",
    "privacy",
    "talent",
    "mobility",
    "fellowship",
    "doctoral",
    "early-career",
    "industry",
    "startup",
    "scale-up",
    "venture",
    "testbed",
    "demonstrator",
    "roadmap",
    "strategy",
]
JA_WORDS = [
    "研究",
    "イノベーション",
    "協力",
    "量子",
    "材料",
    "電池",
    "水素",
    "半導体",
    "ロボット",
    "健康",
    "高齢化",
    "気候",
    "海洋",
    "観測",
    "核融合",
    "データ",
    "人工知能",
    "コンソーシアム",
    "大学",
    "機関",
    "公募",
    "助成",
    "研究者",
    "交流",
    "合同委員会",
    "成果",
    "オープンサイエンス",
    "基盤",
    "スーパーコンピュータ",
    "重要鉱物",
    "リサイクル",
    "循環経済",
    "センサー",
    "衛星",
]
PROGRAMMES = ("Horizon Europe", "EIC", "ERC", "MSCA", "JSPS", "JST", "AMED", "EIG CONCERT-Japan")
ORGS = (
    "Tohoku University",
    "Kyoto University",
    "RIKEN",
    "AIST",
    "NIMS",
    "KU Leuven",
    "TU Delft",
    "CNRS",
    "Fraunhofer",
    "Max Planck Society",
    "CEA",
    "Chalmers University of Technology",
    "Politecnico di Milano",
    "University of Tokyo",
)
CITIES = ("Brussels", "Tokyo", "Osaka", "Berlin", "Paris", "Online", "Kyoto", "Madrid")


def words(rng: random.Random, n: int, vocab: tuple[str, ...] | list[str] = WORDS) -> str:
    return " ".join(rng.choice(vocab) for _ in range(n))


def sentence(rng: random.Random, lo: int = 8, hi: int = 18) -> str:
    text = words(rng, rng.randint(lo, hi))
    return text[0].upper() + text[1:] + "."


def ja_sentence(rng: random.Random) -> str:
    return "".join(rng.choice(JA_WORDS) for _ in range(rng.randint(6, 14))) + "。"


def markdown_body(rng: random.Random) -> str:
    """Two to four paragraphs with emphasis, a link and sometimes a list: 400-1,500 bytes."""
    paragraphs = []
    for _ in range(rng.randint(2, 4)):
        parts = [sentence(rng) for _ in range(rng.randint(2, 4))]
        if rng.random() < 0.5:
            parts.insert(1, f"**{words(rng, 2)}** and *{words(rng, 3)}* matter here.")
        if rng.random() < 0.5:
            slug = "-".join(rng.choice(WORDS) for _ in range(3))
            parts.append(f"See [{words(rng, 3)}](https://example.org/{slug}).")
        paragraphs.append(" ".join(parts))
    if rng.random() < 0.4:
        paragraphs.append("\n".join(f"- {sentence(rng, 4, 9)}" for _ in range(rng.randint(2, 4))))
    return "\n\n".join(paragraphs) + "\n"


def yaml_str(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)  # a JSON string is a valid YAML scalar


def front_matter(fields: dict[str, object]) -> str:
    lines = ["---"]
    for key, value in fields.items():
        if value is None:
            continue
        if isinstance(value, bool):
            lines.append(f"{key}: {'true' if value else 'false'}")
        elif isinstance(value, int | float):
            lines.append(f"{key}: {value}")
        elif isinstance(value, list):
            lines.append(f"{key}: [{', '.join(yaml_str(str(v)) for v in value)}]")
        else:
            lines.append(f"{key}: {yaml_str(str(value))}")
    lines.append("---")
    return "\n".join(lines) + "\n"


# --- the generated project ------------------------------------------------------------------------

KIND_SHARES = {  # of --items
    "milestones": 0.15,
    "calls": 0.25,
    "projects": 0.15,
    "events": 0.20,
    "news": 0.20,
    "contacts": 0.05,
}


def item_fields(kind: str, i: int, rng: random.Random, now: datetime) -> dict[str, object]:
    today = now.date()
    title = sentence(rng, 4, 10).rstrip(".")
    fields: dict[str, object] = {"title": title}
    common = {
        "summary": " ".join(sentence(rng) for _ in range(rng.randint(1, 3))),
        "link": f"https://example.org/{kind}/{i}",
        "tags": [rng.choice(WORDS) for _ in range(rng.randint(1, 4))],
    }
    if kind == "milestones":
        year = today.year if rng.random() < 0.05 else rng.randint(1995, today.year - 1)
        month = today.month if rng.random() < 0.15 else rng.randint(1, 12)
        style = rng.random()
        if style < 0.2:
            fields["date"] = f"{year}"
        elif style < 0.6:
            fields["date"] = f"{year}-{month:02d}"
        else:
            fields["date"] = f"{year}-{month:02d}-{rng.randint(1, 28):02d}"
        fields.update(common, featured=rng.random() < 0.3)
    elif kind == "calls":
        opens = today + timedelta(days=rng.randint(-200, 60))
        deadline = max(opens, today) + timedelta(days=rng.randint(-30, 240))
        fields.update(
            call_id=f"HORIZON-CL{rng.randint(1, 6)}-{deadline.year}-{i:04d}",
            programme=rng.choice(PROGRAMMES),
            opens=opens.isoformat(),
            deadline=deadline.isoformat(),
            budget_eur=rng.randint(1, 400) * 500_000,
            eligibility=" ".join(sentence(rng) for _ in range(2)),
        )
        fields.update(common)
    elif kind == "projects":
        start = rng.randint(2015, today.year)
        fields.update(
            acronym=re.sub(r"[^A-Z]", "", title.upper())[:8] or f"PRJ{i}",
            start=f"{start}",
            end=f"{start + rng.randint(2, 5)}-{rng.randint(1, 12):02d}",
            coordinator=rng.choice(ORGS),
            partners=rng.sample(ORGS, rng.randint(2, 6)),
            featured=rng.random() < 0.2,
        )
        fields.update(common)
    elif kind == "events":
        day = today + timedelta(days=rng.randint(-120, 200))
        if rng.random() < 0.3:
            fields["date"] = f"{day.isoformat()}T{rng.randint(8, 18):02d}:00:00+09:00"
        else:
            fields["date"] = day.isoformat()
            if rng.random() < 0.4:
                fields["end_date"] = (day + timedelta(days=rng.randint(1, 3))).isoformat()
        fields.update(location=rng.choice(CITIES))
        fields.update(common)
    elif kind == "news":
        fields["date"] = (today - timedelta(days=rng.randint(0, 150))).isoformat()
        fields.update(common)
    else:  # contacts
        fields.update(
            organisation=rng.choice(ORGS),
            email=f"contact{i}@example.org",
            phone=f"+32 2 {rng.randint(100, 999)} {rng.randint(10, 99)} {rng.randint(10, 99)}",
            order=rng.randint(1, 200),
        )
        fields.update(common)
    return fields


TRANSLATABLE_EXTRA = {"calls": "eligibility", "events": "location", "contacts": "organisation"}


def write_content(content: Path, items: int, rng: random.Random, now: datetime) -> int:
    """Write `items` items across the kinds; return how many translations were written."""
    counts = {kind: max(1, round(items * share)) for kind, share in KIND_SHARES.items()}
    counts["calls"] += items - sum(counts.values())
    translations = 0
    for kind, count in counts.items():
        folder = content / kind
        folder.mkdir(parents=True)
        for i in range(count):
            name = f"{kind[:-1]}-{i:04d}-{rng.choice(WORDS)}"
            fields = item_fields(kind, i, rng, now)
            body = "" if kind == "contacts" and rng.random() < 0.5 else markdown_body(rng)
            (folder / f"{name}.md").write_text(front_matter(fields) + body, encoding="utf-8")
            if rng.random() < 0.33:
                ja: dict[str, object] = {"title": ja_sentence(rng), "summary": ja_sentence(rng)}
                if kind in TRANSLATABLE_EXTRA:
                    ja[TRANSLATABLE_EXTRA[kind]] = ja_sentence(rng)
                ja_body = "\n\n".join(ja_sentence(rng) * 3 for _ in range(rng.randint(1, 3)))
                (folder / f"{name}.ja.md").write_text(
                    front_matter(ja) + ja_body + "\n", encoding="utf-8"
                )
                translations += 1
    return translations


def entry_html(rng: random.Random, n: int) -> str:
    """A feed entry body of roughly 300-800 bytes: paragraphs, links, an image, inline tags."""
    parts = [
        f'<p>{sentence(rng)} <a href="https://example.org/news/{n}?utm_source=rss">'
        f"{words(rng, 3)}</a> {sentence(rng, 5, 12)}</p>",
        f'<p><img src="/images/{n}.jpg" alt="{words(rng, 3)}" width="560" height="315"></p>',
    ]
    if rng.random() < 0.5:
        parts.append(f"<p><strong>{words(rng, 2)}</strong>: <em>{sentence(rng, 6, 14)}</em></p>")
    if rng.random() < 0.4:
        items = "".join(f"<li>{sentence(rng, 3, 8)}</li>" for _ in range(rng.randint(2, 4)))
        parts.append(f"<ul>{items}</ul>")
    if rng.random() < 0.1:
        parts.append('<script>alert("x")</script><div style="color:red" onclick="x()">tail</div>')
    parts.append(f'<p>{sentence(rng, 4, 10)} <a href="/more/{n}">Read more</a></p>')
    return "".join(parts)


def write_feed(path: Path, index: int, entries: int, rng: random.Random, now: datetime) -> None:
    """RSS 2.0 for even indexes, Atom for odd ones; dates over the month and 5 months before."""
    site = f"https://feed{index}.example.org"
    atom = index % 2 == 1
    out = io.StringIO()
    out.write('<?xml version="1.0" encoding="UTF-8"?>\n')
    if atom:
        out.write(
            '<feed xmlns="http://www.w3.org/2005/Atom" xml:lang="en">\n'
            f'<title>Feed {index}</title>\n<link href="{site}/"/>\n'
            f"<id>{site}/</id>\n<updated>{now.astimezone(UTC).isoformat()}</updated>\n"
        )
    else:
        out.write(
            '<rss version="2.0"><channel>\n'
            f"<title>Feed {index}</title>\n<link>{site}/</link>\n"
            f"<description>{words(rng, 8)}</description>\n<language>en</language>\n"
        )
    month_end = now.replace(hour=23, minute=0)
    for n in range(entries):
        published = month_end - timedelta(minutes=rng.randint(0, 180 * 24 * 60))
        published = min(published, now)
        title = html.escape(sentence(rng, 5, 12).rstrip("."))
        link = f"{site}/news/{n}"
        body = entry_html(rng, n)
        tags = [rng.choice(WORDS) for _ in range(rng.randint(1, 3))]
        if atom:
            cats = "".join(f'<category term="{t}"/>' for t in tags)
            out.write(
                f'<entry><title>{title}</title><link href="{link}"/>'
                f"<id>tag:feed{index}.example.org,2026:{n}</id>"
                f"<updated>{published.astimezone(UTC).isoformat()}</updated>"
                f"<published>{published.astimezone(UTC).isoformat()}</published>{cats}"
                f'<content type="html">{html.escape(body)}</content></entry>\n'
            )
        else:
            cats = "".join(f"<category>{t}</category>" for t in tags)
            description = (
                f"<![CDATA[{body}]]>" if n % 2 else html.escape(body)
            )  # both encodings occur in the wild
            out.write(
                f"<item><title>{title}</title><link>{link}</link>"
                f'<guid isPermaLink="true">{link}</guid>'
                f"<pubDate>{format_datetime(published)}</pubDate>{cats}"
                f"<description>{description}</description></item>\n"
            )
    out.write("</feed>\n" if atom else "</channel></rss>\n")
    path.write_text(out.getvalue(), encoding="utf-8")


def generate_project(
    root: Path, items: int, feeds: int, entries: int, now: datetime, seed: int = 2
) -> dict[str, int]:
    rng = random.Random(seed)
    shutil.copytree(ROOT / "templates", root / "templates")
    config = (ROOT / "newsletter.toml").read_text(encoding="utf-8")
    head = config.split("[[feeds]]", 1)[0].rstrip() + "\n"
    feed_dir = root / "content" / "feeds"
    feed_dir.mkdir(parents=True)
    blocks = []
    for index in range(feeds):
        name = f"feed-{index:02d}.{'atom' if index % 2 else 'xml'}"
        write_feed(feed_dir / name, index, entries, rng, now)
        blocks.append(
            f'[[feeds]]\nname = "Generated feed {index:02d}"\npath = "content/feeds/{name}"\n'
        )
    (root / "newsletter.toml").write_text(head + "\n" + "\n".join(blocks), encoding="utf-8")
    translations = write_content(root / "content", items, rng, now)
    feed_bytes = sum(p.stat().st_size for p in feed_dir.iterdir())
    return {"items": items, "translations": translations, "feed_bytes": feed_bytes}


# --- measuring ------------------------------------------------------------------------------------
#
# Every measure runs in a fresh Python process (this script with --child), as `newsletter build`
# does: in-process memoisation (parsed content, premailer's CSS cache, Babel locale data) must
# not make a "first" build look warm. Imports happen before the clock starts in every child.


def reset_state(project: Project) -> None:
    shutil.rmtree(project.state_dir, ignore_errors=True)
    shutil.rmtree(project.outbox_dir, ignore_errors=True)


def pre_inline_html(project: Project, now: datetime, period: Period) -> dict[str, str]:
    """The finished issue's HTML before inlining, per language, as the build renders it."""
    inputs = load_inputs(project, offline=True)
    selection = select_issue(inputs.config, inputs.content, inputs.feeds.entries, period, now)
    env = make_environment(project.template_dirs())
    locale_dirs = [d / "locales" for d in project.template_dirs()]
    return {
        lang: render_issue(inputs.config, selection, lang, env, locale_dirs).html
        for lang in inputs.config.newsletter.languages
    }


def measure_floor(feed_files: list[Path], issues: dict[str, str], base_url: str) -> dict:
    cpu = time.process_time()
    started = time.perf_counter()
    entries = 0
    for path in feed_files:
        parsed = feedparser.parse(
            path.read_bytes(), sanitize_html=False, resolve_relative_uris=False
        )
        entries += len(parsed.entries)
    parse = time.perf_counter() - started
    started = time.perf_counter()
    for issue_html in issues.values():
        inline_css(issue_html, base_url)
    inline = time.perf_counter() - started
    cpu = time.process_time() - cpu
    total = parse + inline
    return {"parse": parse, "inline": inline, "total": total, "cpu": cpu, "entries": entries}


def measure_build(project: Project, now: datetime, period: Period) -> dict:
    cpu = time.process_time()
    started = time.perf_counter()
    result = build(project, period=period, now=now, offline=True)
    total = time.perf_counter() - started
    cpu = time.process_time() - cpu
    timings = {stage: result.timings.get(stage, 0.0) for stage in STAGES}
    unchanged = [i.unchanged for i in result.issues]
    return {**timings, "total": total, "cpu": cpu, "unchanged": unchanged}


class _SerialExecutor:
    """Stands in for ThreadPoolExecutor under the profiler: cProfile sees only its own thread."""

    def __init__(self, *args: object, **kwargs: object):
        pass

    def __enter__(self) -> _SerialExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def map(self, fn, *iterables):
        return map(fn, *iterables)


def profile_build(project: Project, now: datetime, period: Period, kind: str) -> None:
    """cProfile one build; feeds are ingested serially so their work shows in the profile."""
    import newsletter.feeds

    pool = newsletter.feeds.ThreadPoolExecutor
    newsletter.feeds.ThreadPoolExecutor = _SerialExecutor
    profiler = cProfile.Profile()
    try:
        started = time.perf_counter()
        profiler.enable()
        result = build(project, period=period, now=now, offline=True)
        profiler.disable()
        elapsed = time.perf_counter() - started
    finally:
        newsletter.feeds.ThreadPoolExecutor = pool
    stages = ", ".join(f"{k} {v:.3f}" for k, v in result.timings.items())
    print(f"\nprofiled {kind} build (feeds serial, profiler overhead included): {elapsed:.3f}s")
    print(f"  stages: {stages}")
    for order in ("cumulative", "tottime"):
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).strip_dirs().sort_stats(order).print_stats(30)
        print(f"\n--- cProfile of one {kind} build, top 30 by {order} ---")
        print(out.getvalue().split("\n\n", 2)[-1].rstrip())


def child(args: argparse.Namespace) -> int:
    """One measure in this fresh process; results as JSON on the last line of stdout."""
    project = Project.at(args.project)
    now = datetime.fromisoformat(args.now)
    period = Period.of(now)
    if args.child == "floor":
        issues = json.loads((project.root / "issue-html.json").read_text(encoding="utf-8"))
        website = str(load_config(project.root).newsletter.website)
        feed_files = sorted((project.root / "content" / "feeds").iterdir())
        print(json.dumps([measure_floor(feed_files, issues, website)]))
    elif args.child == "build":
        print(json.dumps([measure_build(project, now, period) for _ in range(args.builds)]))
    else:
        profile_build(project, now, period, args.child.removeprefix("profile-"))
    return 0


def run_child(project: Project, args: argparse.Namespace, mode: str, builds: int = 1) -> list:
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        mode,
        "--project",
        str(project.root),
        "--now",
        args.now,
        "--builds",
        str(builds),
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.exit(f"{mode} run failed:\n{done.stderr}")
    if mode.startswith("profile-"):
        print(done.stdout)
        return []
    return json.loads(done.stdout.strip().splitlines()[-1])


def median(runs: list[dict], key: str) -> float:
    return statistics.median(run[key] for run in runs)


def spread(runs: list[dict], key: str) -> str:
    values = [run[key] for run in runs]
    return f"{min(values):.3f}-{max(values):.3f}"


def report(args: argparse.Namespace, info: dict, issues: dict[str, str], runs: dict) -> bool:
    floors, firsts, seconds, again = (
        runs[k] for k in ("floor", "first", "second", "second_same_process")
    )
    print(f"\nmedian of {args.repeat} runs, seconds [min-max]")
    columns = ("floor", "first build", "second build", "2nd, same proc.")
    print(f"{'stage':<8}" + "".join(f"{c:>21}" for c in columns))
    floor_of = {"ingest": "parse", "inline": "inline"}
    for stage in (*STAGES, "total", "cpu"):
        key = stage if stage in ("total", "cpu") else floor_of.get(stage)
        cells = [f"{median(floors, key):.3f} [{spread(floors, key)}]" if key else "-"]
        cells += [f"{median(r, stage):.3f} [{spread(r, stage)}]" for r in (firsts, seconds, again)]
        print(f"{stage:<8}" + "".join(f"{c:>21}" for c in cells))
    print(
        "total = wall time around build() in a fresh process (imports excluded); "
        "cpu = process CPU time, all threads;\n'2nd, same proc.' = one more build in the "
        "second build's process (what watch/preview see)"
    )
    print(f"issue HTML: {', '.join(f'{k} {len(v) / 1024:.0f} KB' for k, v in issues.items())}")
    floor, first, second = (median(r, "total") for r in (floors, firsts, seconds))
    ratios = {"first_vs_floor": first / floor, "second_vs_first": second / first}
    cpu = [median(r, "cpu") for r in (floors, firsts, seconds)]
    cpu_ratios = {"first_vs_floor": cpu[1] / cpu[0], "second_vs_first": cpu[2] / cpu[1]}
    ok_first = ratios["first_vs_floor"] <= TARGET_FIRST_VS_FLOOR
    ok_second = ratios["second_vs_first"] < TARGET_SECOND_VS_FIRST
    print(
        f"\nfirst build / floor  = {ratios['first_vs_floor']:.2f}  "
        f"(target <= {TARGET_FIRST_VS_FLOOR})  {'OK' if ok_first else 'MISSED'}   "
        f"in CPU time: {cpu_ratios['first_vs_floor']:.2f}"
    )
    print(
        f"second / first build = {ratios['second_vs_first']:.2f}  "
        f"(target < {TARGET_SECOND_VS_FIRST:.2f})  {'OK' if ok_second else 'MISSED'}   "
        f"in CPU time: {cpu_ratios['second_vs_first']:.2f}"
    )
    load = os.getloadavg()[0]
    if load > 0.5:
        print(
            f"note: load average {load:.1f} on {os.cpu_count()} CPUs at the end: other processes "
            "competed for the CPU, so wall times are noisy; compare the CPU-time ratios"
        )
    if args.save:
        results = ROOT / "benchmarks" / "results"
        results.mkdir(parents=True, exist_ok=True)
        out = results / f"build-{datetime.now().strftime('%Y%m%dT%H%M%S')}.json"
        record = {
            "args": {k: v for k, v in vars(args).items() if not k.startswith("child")},
            "python": platform.python_version(),
            "machine": platform.platform(),
            "cpus": os.cpu_count(),
            "load_average": load,
            "project": info,
            "runs": runs,
            "ratios": ratios,
            "cpu_ratios": cpu_ratios,
        }
        out.write_text(json.dumps(record, indent=2), encoding="utf-8")
        print(f"saved {out.relative_to(ROOT)}")
    return ok_first and ok_second


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=1000, help="content items (default 1000)")
    parser.add_argument("--feeds", type=int, default=50, help="local feeds (default 50)")
    parser.add_argument("--entries", type=int, default=200, help="entries per feed (default 200)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each measure (median)")
    parser.add_argument("--now", default=DEFAULT_NOW, help=f"issue time (default {DEFAULT_NOW})")
    parser.add_argument("--save", action="store_true", help="write JSON to benchmarks/results/")
    parser.add_argument("--keep", action="store_true", help="keep the generated project")
    parser.add_argument("--profile", choices=("cold", "warm"), help="cProfile one extra build")
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--project", help=argparse.SUPPRESS)
    parser.add_argument("--builds", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child(args)
    now = datetime.fromisoformat(args.now)
    period = Period.of(now)

    tmp = Path(tempfile.mkdtemp(prefix="newsletter-bench-"))
    try:
        started = time.perf_counter()
        info = generate_project(tmp, args.items, args.feeds, args.entries, now)
        project = Project.at(tmp)
        print(
            f"generated {args.items} items (+{info['translations']} ja translations), "
            f"{args.feeds} feeds x {args.entries} entries ({info['feed_bytes'] / 1e6:.1f} MB) "
            f"in {time.perf_counter() - started:.1f}s at {tmp}"
        )
        load = os.getloadavg()[0]
        if load > 0.5:
            print(f"warning: load average {load:.1f} on {os.cpu_count()} CPUs before the runs")
        # Untimed: the issue's pre-inline HTML, for the floor's premailer calls.
        issues = pre_inline_html(project, now, period)
        (tmp / "issue-html.json").write_text(json.dumps(issues), encoding="utf-8")
        reset_state(project)

        runs: dict[str, list] = {"floor": [], "first": [], "second": [], "second_same_process": []}
        for run in range(args.repeat):
            runs["floor"] += run_child(project, args, "floor")
            reset_state(project)
            runs["first"] += run_child(project, args, "build")
            second, again = run_child(project, args, "build", builds=2)
            runs["second"].append(second)
            runs["second_same_process"].append(again)
            rewrote = not all(second["unchanged"])
            print(
                f"run {run + 1}/{args.repeat}: floor {runs['floor'][-1]['total']:.3f}s, "
                f"first {runs['first'][-1]['total']:.3f}s, second {second['total']:.3f}s"
                f"{' (the second build rewrote files!)' if rewrote else ''}",
                flush=True,
            )
        ok = report(args, info, issues, runs)
        if args.profile:
            reset_state(project)
            if args.profile == "warm":
                run_child(project, args, "build")
            run_child(project, args, f"profile-{args.profile}")
        return 1 if args.check and not ok else 0
    finally:
        if args.keep:
            print(f"kept the generated project at {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
