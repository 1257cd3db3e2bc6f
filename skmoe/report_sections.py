"""The words of the report: each section's text, table and captions from the computed results.

:func:`sections` turns a :class:`ReportResults` (filled by :func:`skmoe.report.build_report`)
into :class:`skmoe.render.Section` s. Every caption says what its picture shows, and every
statement about the data (chance, the smallest and largest transfer gaps, what the clusters of a
map are made of) is computed from the results, never assumed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from .evaluation.data import ReportData
from .postprocessing import describe_rows
from .render import Section, mean_std_cells

#: Transfer accuracy within this of the majority-class rate is called "near chance".
NEAR_CHANCE = 0.1
#: A nearest-neighbour share above this (and halfway from chance to 1) is called "mostly".
MOSTLY = 0.5


@dataclass
class ReportResults:
    """What the report computed, section by section (None: that part was not run)."""

    rd: ReportData
    shots: int
    seeds: int
    chance: float  # majority-class rate of the test rows
    per_language: pd.DataFrame | None = None
    matrix: pd.DataFrame | None = None
    matrix_std: pd.DataFrame | None = None
    from_source: pd.DataFrame | None = None
    maps: list[tuple[str, str]] | None = None  # (file, caption)
    bitext: pd.DataFrame | None = None
    routing: tuple[Any, str] | None = None  # (MoE config, divergence sentence)
    pooling: Any = None  # skmoe.report_pooling.PoolingComparison


def sections(res: ReportResults) -> list[Section]:
    """The report's sections in order; parts that were not run are left out."""
    out = [probe_section(res), transfer_section(res), matrix_section(res)]
    if res.bitext is not None:
        out.append(bitext_section(res))
    if res.maps:
        out.append(Section("Embedding maps", "Two 2-D projections (fitted separately) of the "
                           "test texts' embeddings. A projection distorts distances; the "
                           "nearest-neighbour shares in the captions are measured in the "
                           "embedding itself (cosine).", images=list(res.maps)))
    if res.routing is not None:
        out.append(routing_section(res))
    if res.pooling is not None:
        out.append(pooling_section(res))
    return out


def probe_section(res: ReportResults) -> Section:
    rd, shots, seeds = res.rd, res.shots, res.seeds
    text = (f"For each language, {seeds} seeded draws of `shots_per_label` = {shots} training "
            "examples per label from the language's `train_pool`; a "
            "LogisticRegression(max_iter=100) head (the MTEB protocol) is fit on their "
            "embeddings and scored on the language's `test_rows`. Mean and standard deviation "
            "over draws.")
    smallest = int(rd.train.groupby(["language", "label"]).size().min())
    if smallest <= shots:
        text += (f" Note: some label has only {smallest} training rows in some language, "
                 f"so with {shots} per label those draws use all of them (no spread "
                 "between draws).")
    labels = list(pd.unique(rd.train["label"]))
    have = rd.train.groupby("language", sort=False)["label"].agg(set)
    lacking = {lang: missing for lang, got in have.items()
               if (missing := [lab for lab in labels if lab not in got])}
    if lacking:  # their probes choose among fewer labels: scores are not comparable as they are
        text += " Note: some languages lack labels in their training rows (" + "; ".join(
            f"{lang}: {', '.join(map(str, missing))}" for lang, missing in lacking.items()
        ) + "), so their probes choose among fewer labels than the others."
    return Section("Few-shot probe per language", text, res.per_language,
                   images=[("accuracy_by_language.png",
                            f"Accuracy per language (mean, bars: ± 1 std over {seeds} draws): "
                            f"in-language probe vs. probe trained on {rd.source_language}; "
                            f"dashed line: majority-class rate {res.chance:.3f}")])


def transfer_section(res: ReportResults) -> Section:
    src, chance = res.rd.source_language, res.chance
    from_src = res.from_source
    text = (f"Probes trained on {src} ({res.shots} per label) and scored on every language's "
            "test rows; `gap` = in-language accuracy - transfer accuracy; each with its "
            f"standard deviation over draws. Chance (majority-class rate): {chance:.3f}; a "
            "small gap means good transfer only where both accuracies are well above it.")
    others = (from_src[from_src["test_language"] != src].sort_values("gap")
              if from_src is not None else pd.DataFrame())
    if len(others):
        first, last = others.iloc[0], others.iloc[-1]
        # by the signed gap: "closest" once named the most negative gap (transfer above the
        # in-language probe), further from zero than a gap of +0.007
        beat = (f"; transfer scored above the in-language probe in "
                f"{', '.join(map(str, others[others['gap'] < 0]['test_language']))}"
                if (others["gap"] < 0).any() else "")
        text += (f" Smallest gap (transfer loses least): {first['test_language']} "
                 f"({first['gap']:+.3f}); largest: {last['test_language']} "
                 f"({last['gap']:+.3f}){beat}.")
        near = others[others["accuracy"] < chance + NEAR_CHANCE]["test_language"].tolist()
        if near:
            text += (f" Near chance (transfer accuracy below chance + {NEAR_CHANCE}): "
                     f"{', '.join(map(str, near))}: no transfer there, whatever the gap.")
    return Section(f"Transfer from {src}", text, from_src)


def matrix_section(res: ReportResults) -> Section:
    table = None
    spread = ""
    if res.matrix is not None and res.matrix_std is not None:
        table = mean_std_cells(res.matrix, res.matrix_std)
        stds = res.matrix_std.to_numpy(dtype=float)
        if np.isfinite(stds).any():  # one draw: no spread to state (and no All-NaN warning)
            spread = (" The median standard deviation of a cell is "
                      f"{float(np.nanmedian(stds)):.3f}.")
    return Section(
        "Transfer matrix",
        "Accuracy (mean ± std over draws) of probes trained on the row language and scored on "
        "the column language (the diagonal is the in-language probe)." + spread,
        table, table_index=True,
        images=[("transfer_heatmap.png",
                 f"Train language x test language mean accuracy. The colour scale runs from "
                 f"chance ({res.chance:.3f}, the majority-class rate) to 1.0, so a colour shows "
                 "the distance from chance and from perfect, not from the other cells; "
                 "differences smaller than the standard deviations in the table are noise.")])


def bitext_section(res: ReportResults) -> Section:
    src = res.rd.source_language
    return Section(
        "Bitext retrieval",
        f"Each sentence's translation looked up by cosine among the `n` sentences that "
        f"{src} and the language share (train and test rows, paired by id): the share found "
        "first, in both directions. Chance is 1/n. No training: this shows whether "
        "translations land next to each other in the embedding space.", res.bitext)


def routing_section(res: ReportResults) -> Section:
    cfg, note = res.routing  # type: ignore[misc]
    return Section(
        "Expert routing",
        f"Each expert's share of a language's routing slots in every MoE layer (test texts, "
        f"prompt and special tokens included): every token picks its top {cfg.moe_top_k} of "
        f"{cfg.num_experts} experts, filling {cfg.moe_top_k} slots, so the shares sum to 1 and "
        f"a share of {1 / cfg.moe_top_k:.2g} means the expert is among the top {cfg.moe_top_k} "
        f"of every token; routing.csv holds the counts. {note}",
        images=[("routing_heatmap.png", "Expert share of the routing slots per language (rows) "
                 "and expert (columns), one panel per MoE layer; the colour scale, shared by the "
                 f"panels, starts at 0 (a router without preference gives each expert "
                 f"1/{cfg.num_experts} = {1 / cfg.num_experts:.3f})")])


def routing_note(stats: Any) -> str:
    """The routing section's sentence: the most different and most similar language pairs,
    and the sampling noise they should be read against (``stats`` from ``split_half=True``)."""
    div = stats.divergence
    if div.empty:
        return ""
    mean = div.groupby(["group_a", "group_b"], sort=False)["js_divergence"].mean()
    (a, b), hi = mean.idxmax(), mean.max()
    (c, d), lo = mean.idxmin(), mean.min()
    text = "Jensen-Shannon divergence of expert shares, mean over MoE layers: " + (
        f"{a} / {b} {hi:.3f}." if len(mean) == 1 else
        f"most different pair {a} / {b} ({hi:.3f}), most similar {c} / {d} ({lo:.3f}).")
    noise = stats.split_half.groupby("group", sort=False)["js_divergence"].mean().dropna()
    if noise.empty:
        return text
    text += (f" Sampling noise: two random halves of one language's texts differ by "
             f"{noise.median():.3f} (median over languages; up to {noise.max():.3f}, an "
             "overestimate, as each half holds half the texts).")
    below = int((mean <= noise.max()).sum())
    if below:
        text += (f" Language pairs within that noise (their difference may be noise alone): "
                 f"{below} of {len(mean)}.")
    return text


def pooling_section(res: ReportResults) -> Section:
    """Learned vs mean pooling: the table and one sentence computed from it."""
    comp = res.pooling
    t = comp.table
    d = t["difference"]
    gains = t.loc[t["ci_low"] > 0, "language"].tolist()
    losses = t.loc[t["ci_high"] < 0, "language"].tolist()
    low, high = int(t["epochs"].min()), int(t["epochs"].max())
    epochs = f"{low} epochs" if low == high else f"{low} to {high} epochs"
    text = (
        "`LearnedPooling` (attention over the frozen encoder's token states, trained with "
        f"cross-entropy on each language's `train_pool`, {epochs}) against mean pooling of "
        "the same token states; both followed by `LogisticRegression()` with sklearn's defaults "
        "on the whole training pool (not the few-shot draws above), scored on `test_rows`. "
        "`ci_low`/`ci_high`: paired bootstrap 95% interval of the difference over the test "
        f"rows. Mean difference {d.mean():+.3f} (from {d.min():+.3f} to {d.max():+.3f}); the "
        "interval is above 0 in " + (", ".join(map(str, gains)) if gains else "no language")
        + " and below 0 in " + (", ".join(map(str, losses)) if losses else "no language")
        + f". This part took {comp.seconds:.1f} s, {comp.states_seconds:.1f} s of it the "
        "encoder pass for the token states.")
    return Section("Learned pooling vs mean pooling", text, t,
                   images=[comp.image] if comp.image else [])


def _chance_share(values: Any) -> float:
    """The share a random neighbour would have of the same value: the sum of squared shares."""
    p = pd.Series(np.asarray(values, dtype=object)).value_counts(normalize=True).to_numpy()
    return float(np.sum(p ** 2))


def map_caption(name: str, column: str, rows: pd.DataFrame, source: Any,
                shares: dict[str, float]) -> str:
    """What a map shows: which texts, coloured by what, and what its clusters are made of
    (``shares``: nearest-neighbour shares from :func:`skmoe.report.nearest_neighbour_shares`)."""
    label_share, label_chance = shares.get("label", np.nan), _chance_share(rows["label"])
    sampled = shares.get("queries", len(rows)) < len(rows)
    neighbour = (f"Each of a seeded sample of {int(shares['queries']):,} texts: its nearest "
                 "neighbour" if sampled else "Each text's nearest neighbour")
    if column == "label":
        return (f"{name} of the {len(rows)} {source} test texts only, one translation per "
                "sentence (so no cluster is a sentence and its translations), coloured by "
                f"label. {neighbour} has the same label for "
                f"{label_share:.0%} of them (a random neighbour: {label_chance:.0%}).")
    n_lang = rows["language"].nunique()
    lang_share, lang_chance = shares.get("language", np.nan), _chance_share(rows["language"])
    text = (f"{name} of all {len(rows)} test texts ({n_lang} languages), coloured by "
            f"language. {neighbour} ")
    found = []
    if "id" in shares:
        found.append(f"is a translation of the same sentence for {shares['id']:.0%}")
    found += [f"has the same label for {label_share:.0%} (random: {label_chance:.0%})",
              f"the same language for {lang_share:.0%} (random: {lang_chance:.0%})"]
    text += ", ".join(found) + "."
    if shares.get("id", 0.0) > MOSTLY:
        text += (" So the small tight groups of mixed colours are mostly one sentence in its "
                 "translations, not topics.")
    elif lang_share > max(MOSTLY, lang_chance + (1 - lang_chance) / 2):
        text += " So the languages mostly sit in regions of their own."
    elif lang_share < lang_chance + (1 - lang_chance) / 4:
        text += " So texts of different languages mix: the space is shared across languages."
    return text


def meta_rows(transformer: Any, model: tuple[Any, str] | None, rd: ReportData, n_encoded: int,
              embed_seconds: float, from_cache: int | None,
              total_seconds: float) -> list[tuple[str, str]]:
    """The report's table of what made it: the model (``model``: its card and precision label,
    None for a transformer that is no skmoe one), its vectors, the data and the times."""
    rows: list[tuple[str, str]] = []
    if model is not None:
        card, precision = model
        src = card.source
        rows += [("model", str(src.name)), ("revision", str(src.revision)),
                 ("weights fingerprint", str(src.fingerprint)),
                 ("architecture", "native MoE" if card.is_moe else "dense"),
                 ("precision", precision),
                 ("prompt", repr(getattr(transformer, "prompt_", ""))),
                 ("embedding width", str(getattr(transformer, "n_features_out_", "?")))]
    else:
        rows.append(("transformer", repr(transformer)))
    if (described := describe_rows(transformer)) is not None:
        rows.append(("vectors", described))
    rows += [
        ("languages", ", ".join(map(str, rd.languages))),
        ("labels", ", ".join(map(str, pd.unique(rd.train["label"])))),
        ("rows", f"{len(rd.train):,} train, {len(rd.test):,} test ({rd.split_note})"),
        ("texts embedded", f"{n_encoded:,} distinct, {embed_seconds:.1f} s"
         + (f" ({from_cache:,} from the cache)" if from_cache is not None else "")),
        ("report time", f"{total_seconds:.1f} s"),
    ]
    return rows
