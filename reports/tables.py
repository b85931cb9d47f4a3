"""Paper tables from tracked runs, rendered as Markdown, LaTeX (booktabs), CSV and HTML.

A :class:`Table` holds numbers (percent) and formatting intent (bold cells, grouped column headers,
a provenance footer); the renderers turn it into text. All numbers are computed from the cell runs
and their per-episode tables (reports/collect.py).
"""

from __future__ import annotations

import html
import io
import unicodedata
import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from benchmark.data.classes import NUM_FOLDS
from benchmark.evaluation.metrics import MetricsError, paired_bootstrap_diff_over_folds, seed_bootstrap_ci
from reports.collect import ExperimentData, manifest_classes
from reports.references import Reference


@dataclass
class Table:
    """Rows of formatted cells under (group, column) headers. ``values`` keeps the raw numbers (CSV)."""

    title: str
    name: str  # file stem
    columns: list[tuple[str, str]]  # (group, column); group "" for ungrouped
    row_header: str
    rows: list[str]
    cells: list[list[str]]  # formatted text, rows x columns
    values: list[list[float | str]]  # raw values for CSV
    bold: list[list[bool]] = field(default_factory=list)
    footer: list[str] = field(default_factory=list)
    # CSV headers where ``values`` has other columns than the printed table (e.g. a CI printed as
    # one "[low, high]" cell is two numeric CSV columns); the printed headers otherwise
    csv_columns: list[str] | None = None

    def __post_init__(self) -> None:
        if not self.bold:
            self.bold = [[False] * len(self.columns) for _ in self.rows]

    # ------------------------------------------------------------------------------------ renderers
    def _header_names(self) -> list[str]:
        return [f"{g} {c}".strip() if g else c for g, c in self.columns]

    def to_markdown(self) -> str:
        head = [self.row_header, *self._header_names()]
        lines = [
            f"**{self.title}**",
            "",
            "| " + " | ".join(head) + " |",
            "|" + "|".join([":--"] + ["--:"] * len(self.columns)) + "|",
        ]
        for r, label in enumerate(self.rows):
            cells = [f"**{c}**" if b else c for c, b in zip(self.cells[r], self.bold[r], strict=True)]
            lines.append("| " + " | ".join([label, *cells]) + " |")
        lines += [""] + [f"> {f}" for f in self.footer]
        return "\n".join(lines) + "\n"

    def to_latex(self) -> str:
        esc = latex_escape
        n = len(self.columns)
        out = [
            "\\begin{table}[t]",
            "\\centering",
            f"\\caption{{{esc(self.title)}}}",
            f"\\label{{tab:{self.name}}}",
            "\\begin{tabular}{l" + "c" * n + "}",
            "\\toprule",
        ]
        groups = _group_spans(self.columns)
        if any(g for g, _, _ in groups):
            heads, rules = [""], []
            for g, start, span in groups:
                heads.append(f"\\multicolumn{{{span}}}{{c}}{{{esc(g)}}}" if span > 1 else esc(g))
                if g:
                    rules.append(f"\\cmidrule(lr){{{start + 2}-{start + span + 1}}}")
            out.append(" & ".join(heads) + " \\\\")
            out.append(" ".join(rules))
        out.append(" & ".join([esc(self.row_header), *[esc(c) for _, c in self.columns]]) + " \\\\")
        out.append("\\midrule")
        for r, label in enumerate(self.rows):
            cells = [
                f"\\textbf{{{esc(c)}}}" if b else esc(c)
                for c, b in zip(self.cells[r], self.bold[r], strict=True)
            ]
            out.append(" & ".join([esc(label), *cells]) + " \\\\")
        out += ["\\bottomrule", "\\end{tabular}"]
        if self.footer:
            out.append("\\par\\smallskip{\\footnotesize " + " \\\\ ".join(esc(f) for f in self.footer) + "}")
        out.append("\\end{table}")
        return "\n".join(out) + "\n"

    def to_csv(self) -> str:
        df = pd.DataFrame(
            self.values,
            columns=self.csv_columns or self._header_names(),
            index=pd.Index(self.rows, name=self.row_header),
        )
        buf = io.StringIO()
        df.to_csv(buf)
        return buf.getvalue()

    def to_html(self) -> str:
        e = html.escape
        groups = _group_spans(self.columns)
        out = ["<table>", "<thead>"]
        if any(g for g, _, _ in groups):
            out.append(
                "<tr><th></th>"
                + "".join(f'<th colspan="{span}">{e(g)}</th>' for g, _, span in groups)
                + "</tr>"
            )
        out.append(
            "<tr><th>"
            + e(self.row_header)
            + "</th>"
            + "".join(f"<th>{e(c)}</th>" for _, c in self.columns)
            + "</tr>"
        )
        out.append("</thead><tbody>")
        for r, label in enumerate(self.rows):
            cells = "".join(
                f"<td><b>{e(c)}</b></td>" if b else f"<td>{e(c)}</td>"
                for c, b in zip(self.cells[r], self.bold[r], strict=True)
            )
            out.append(f"<tr><th>{e(label)}</th>{cells}</tr>")
        out.append("</tbody></table>")
        if self.footer:
            out.append('<p class="footer">' + "<br>".join(e(f) for f in self.footer) + "</p>")
        return "\n".join(out)


_LATEX_SPECIAL = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
}

# Non-ASCII characters the tables may contain (titles, headers, cells, footers, variant and class
# names) -> LaTeX that pdflatex compiles with only booktabs and T1 fontenc. Markdown, HTML and CSV
# keep the Unicode. Accented Latin letters not listed here are spelled with accent macros (see
# :func:`latex_unicode`); tests/test_report_latex.py fails on any character neither covers.
LATEX_UNICODE = {
    "Δ": r"$\Delta$",
    "δ": r"$\delta$",
    "σ": r"$\sigma$",
    "μ": r"$\mu$",
    "µ": r"$\mu$",
    "α": r"$\alpha$",
    "β": r"$\beta$",
    "γ": r"$\gamma$",
    "λ": r"$\lambda$",
    "τ": r"$\tau$",
    "−": "$-$",
    "±": r"$\pm$",
    "×": r"$\times$",
    "·": r"$\cdot$",
    "≤": r"$\leq$",
    "≥": r"$\geq$",
    "≈": r"$\approx$",
    "≠": r"$\neq$",
    "→": r"$\rightarrow$",
    "←": r"$\leftarrow$",
    "↑": r"$\uparrow$",
    "↓": r"$\downarrow$",
    "∞": r"$\infty$",
    "²": r"$^{2}$",
    "³": r"$^{3}$",
    "–": "--",
    "—": "---",
    "‐": "-",
    "‑": "-",
    "…": r"\dots{}",
    "‘": "`",
    "’": "'",
    "“": "``",
    "”": "''",
    "°": r"\textdegree{}",
    "§": r"\textsection{}",
    "€": r"\texteuro{}",
    "\u00a0": "~",
    "\u2009": r"\,",
    "\u202f": r"\,",
    "ß": r"{\ss}",
    "æ": r"{\ae}",
    "Æ": r"{\AE}",
    "œ": r"{\oe}",
    "Œ": r"{\OE}",
    "ø": r"{\o}",
    "Ø": r"{\O}",
    "ł": r"{\l}",
    "Ł": r"{\L}",
    "ı": r"{\i}",
}

# combining mark -> LaTeX accent macro, for letters such as é (e + U+0301) -> \'{e}
_LATEX_ACCENTS = {
    "\u0300": "\\`",
    "\u0301": "\\'",
    "\u0302": "\\^",
    "\u0303": "\\~",
    "\u0304": "\\=",
    "\u0306": "\\u",
    "\u0307": "\\.",
    "\u0308": '\\"',
    "\u030a": "\\r",
    "\u030b": "\\H",
    "\u030c": "\\v",
    "\u0327": "\\c",
    "\u0328": "\\k",
}


def latex_unicode(ch: str) -> str | None:
    """LaTeX for one non-ASCII character: the :data:`LATEX_UNICODE` entry, an accent macro for an
    accented Latin letter (``é`` -> ``\\'{e}``), or None when neither applies."""
    if ch in LATEX_UNICODE:
        return LATEX_UNICODE[ch]
    base, *marks = unicodedata.normalize("NFD", ch)
    if not base.isascii() or not base.isalpha() or not marks or any(m not in _LATEX_ACCENTS for m in marks):
        return None
    out = base
    for m in marks:
        out = f"{_LATEX_ACCENTS[m]}{{{out}}}"
    return out


def latex_escape(text: str) -> str:
    """``text`` as ASCII LaTeX source: special characters escaped, non-ASCII characters spelled
    with :func:`latex_unicode`. A character without a spelling becomes ``?`` with a warning
    (pdflatex would stop on it); tests/test_report_latex.py checks that no table text contains one."""
    out = []
    for ch in unicodedata.normalize("NFC", str(text)):
        if ch.isascii():
            out.append(_LATEX_SPECIAL.get(ch, ch))
        else:
            spelled = latex_unicode(ch)
            if spelled is None:
                warnings.warn(
                    f"no LaTeX spelling for {ch!r} (U+{ord(ch):04X}) in {text!r}; written as '?'",
                    stacklevel=2,
                )
                spelled = "?"
            out.append(spelled)
    return "".join(out)


def _group_spans(columns: list[tuple[str, str]]) -> list[tuple[str, int, int]]:
    spans: list[tuple[str, int, int]] = []
    for i, (g, _) in enumerate(columns):
        if spans and spans[-1][0] == g:
            spans[-1] = (g, spans[-1][1], spans[-1][2] + 1)
        else:
            spans.append((g, i, 1))
    return spans


def _bold_max(values: list[list[float]], decimals: int = 1) -> list[list[bool]]:
    """Bold the best value of each column as printed: values are compared rounded the way the cells
    show them (``decimals``), so every cell that prints the column maximum is bold."""
    if not values:
        return []
    shown = np.array([[_shown(v, decimals) for v in row] for row in values], dtype=float)
    best = np.max(np.where(np.isfinite(shown), shown, -np.inf), axis=0)
    return [[bool(np.isfinite(v) and v == best[j]) for j, v in enumerate(row)] for row in shown]


def _shown(v: float | None, decimals: int = 1) -> float:
    """``v`` as it prints with ``decimals`` decimals (NaN for a missing value)."""
    if v is None or not np.isfinite(v):
        return float("nan")
    return float(f"{v:.{decimals}f}")


def _num(v: float | None, decimals: int = 1, sign: bool = False, missing: str = "–") -> str:
    """``v`` with ``decimals`` decimals, ``+`` on positive values with ``sign``; a value that rounds to
    zero prints as plain ``0.0`` (never ``-0.0`` or ``+0.0``), a missing one as ``missing``."""
    if v is None or not np.isfinite(v):
        return missing
    text = f"{v:+.{decimals}f}" if sign else f"{v:.{decimals}f}"
    return f"{0:.{decimals}f}" if float(text) == 0 else text


def difference_decimals(low: float, high: float, excludes_zero: bool, start: int = 1, most: int = 4) -> int:
    """Decimals to print a difference and its CI with: ``start``, or more when the CI excludes 0 but a
    bound would print as 0 at fewer, so the printed interval shows what the star claims (a CI of
    [+0.026, +0.039] points prints as [+0.03, +0.04], not [0.0, 0.0]); at most ``most``."""
    decimals = start
    if excludes_zero and np.isfinite(low) and np.isfinite(high):
        while decimals < most and min(abs(round(low, decimals)), abs(round(high, decimals))) == 0:
            decimals += 1
    return decimals


def difference_cells(diff: float, low: float, high: float, excludes_zero: bool) -> tuple[str, str]:
    """The printed Δ (with `` *`` when the CI excludes 0) and its ``[low, high]`` CI, in points,
    at the precision :func:`difference_decimals` picks."""
    d = difference_decimals(low, high, excludes_zero)
    mark = " *" if excludes_zero and np.isfinite(diff) else ""
    ci = (
        f"[{_num(low, d, sign=True)}, {_num(high, d, sign=True)}]"
        if np.isfinite(low) and np.isfinite(high)
        else _fmt(None)
    )
    return _num(diff, d, sign=True) + mark, ci


def provenance(data: ExperimentData, cells: pd.DataFrame | None = None) -> list[str]:
    """Footer lines: study, manifest hashes, weight hashes, and a random-init warning."""
    cells = data.cells if cells is None else cells
    lines = []
    if cells["random_init"].any():
        lines.append(
            "WARNING: RANDOM-INIT WEIGHTS in these runs: the numbers check the pipeline, they are not results."
        )
    lines.append(f"Study: {', '.join(sorted(set(cells['study'])))} (MLflow experiment {data.name!r}).")
    manifests = sorted(set(cells["manifest_sha256"].dropna()))
    lines.append("Manifests (sha256): " + ", ".join(m[:12] for m in manifests) + ".")
    w = sorted({x for ws in cells["weights"] for x in ws})
    lines.append("Weights: " + ", ".join(x if x.startswith("random-init") else x[:12] for x in w) + ".")
    return lines


def _fmt(v: float | None) -> str:
    return _num(v)


def _mean_std(mean: float, std: float, n: int) -> str:
    """Percent text: ``mean ± std`` over several seeds, the mean alone for one."""
    return f"{_num(100 * mean)} ± {_num(100 * std)}" if n > 1 else _fmt(100 * mean)


def main_table(
    data: ExperimentData,
    dataset: str,
    metric: str = "miou",
    references: list[Reference] | None = None,
    n_boot: int = 1000,
) -> Table:
    """Paper layout: rows = variants; columns = fold 0..3 and mean, grouped by shot (percent).

    Fold values are means over seeds; the mean column is the mean over the folds present. With
    several seeds the mean column reads ``mean ± std`` (std over seeds of the fold mean) and a
    ``95% CI`` column follows it: a percentile bootstrap over seeds and, within every cell, episodes
    (:func:`benchmark.evaluation.metrics.seed_bootstrap_ci`). Best value per column in bold. ``references``
    that match (dataset, metric, a variant and shot of the table) add a "published" row with the
    paper's number (and its fold values, when it has them) and a row with our difference from it
    (the mean's when all 4 folds are present). A reference that states its scoring is compared only
    with the variant's cells scored the same way; otherwise its row is shown without a difference
    and the footer says why.
    """
    cells = data.cells[data.cells["dataset"] == dataset]
    label = METRIC_LABELS[metric]
    layout = _main_layout(cells)
    values, texts, uneven = _main_values(data, cells, layout, metric, n_boot)
    numeric = [[x if isinstance(x, float) else np.nan for x in row] for row in values]
    bold = _bold_max(numeric)
    footer = _main_footer(data, cells, layout.n_seeds, n_boot, uneven)
    rows = list(layout.variants)
    for ref in references or []:
        if ref.dataset != dataset or ref.metric != metric or ref.shot not in layout.shots:
            continue
        variant, mismatch = published_match(ref, cells)
        if variant is None or variant not in layout.variants:
            continue
        _add_published_rows(ref, layout, rows, values, texts, bold, variant, compare=not mismatch)
        scored = f" ({ref.scoring.text})" if ref.scoring is not None else ""
        if mismatch:
            why = f" Not compared: {mismatch}."
        else:
            why = (
                ""
                if layout.all_folds
                else " No difference of the mean shown: the table has fewer than 4 folds."
            )
        footer.append(
            f"Published (not measured here): {ref.method}, {_dataset_name(dataset)} {ref.shot}-shot mean "
            f"{label} {_num(ref.value)}{scored}. Source: {ref.source}.{why}"
        )
    return Table(
        title=f"{label} (%) on {_dataset_name(dataset)}: mean over seeds; mean = mean over "
        + (f"the {NUM_FOLDS} folds" if layout.all_folds else f"{len(layout.folds)} of {NUM_FOLDS} folds"),
        name=f"main-{dataset}-{metric}",
        columns=layout.columns,
        row_header="method",
        rows=rows,
        cells=texts,
        values=values,
        bold=bold,
        footer=footer,
    )


@dataclass
class _MainLayout:
    """What a main table is laid out by: the ``shots``, ``folds`` and ``variants`` (in order of
    appearance) of its cells, their number of seeds ``n_seeds``, the mean column's header
    ``mean_label`` and the (group, column) headers ``columns`` (which published columns extend)."""

    shots: list[int]
    folds: list[int]
    variants: list[str]
    n_seeds: int
    mean_label: str
    columns: list[tuple[str, str]]

    @property
    def all_folds(self) -> bool:
        """Whether all :data:`NUM_FOLDS` folds are present (the mean is comparable to a paper's)."""
        return len(self.folds) == NUM_FOLDS


def _main_layout(cells: pd.DataFrame) -> _MainLayout:
    """The layout of the main table of ``cells`` (the cell rows of one dataset): per shot, a column
    per fold, the mean and, with several seeds, the ``95% CI``."""
    shots = sorted(cells["shot"].unique())
    folds = sorted(cells["fold"].unique())
    n_seeds = cells["seed"].nunique()
    mean_label = "mean" if len(folds) == NUM_FOLDS else f"mean ({len(folds)} of {NUM_FOLDS} folds)"
    per_shot = [*[f"fold{f}" for f in folds], mean_label] + (["95% CI"] if n_seeds > 1 else [])
    columns = [(f"{s}-shot", c) for s in shots for c in per_shot]
    return _MainLayout(shots, folds, list(dict.fromkeys(cells["variant"])), n_seeds, mean_label, columns)


def _main_values(
    data: ExperimentData, cells: pd.DataFrame, layout: _MainLayout, metric: str, n_boot: int
) -> tuple[list[list[float | str]], list[list[str]], set[str]]:
    """The main table's raw values and formatted texts (a row per variant, ``layout.columns``
    wide; ``metric`` in percent) and the variants whose seeds ran different folds (no std or CI)."""
    per_fold = cells.groupby(["variant", "shot", "fold"])[metric].mean() * 100
    values, texts = [], []
    uneven: set[str] = set()
    for v in layout.variants:
        row, text = [], []
        for s in layout.shots:
            shot_row, shot_text, even = _main_shot_cells(data, cells, per_fold, layout, v, s, metric, n_boot)
            row += shot_row
            text += shot_text
            if not even:
                uneven.add(v)
        values.append(row)
        texts.append(text)
    return values, texts, uneven


def _main_shot_cells(
    data: ExperimentData,
    cells: pd.DataFrame,
    per_fold: pd.Series,
    layout: _MainLayout,
    variant: str,
    shot: int,
    metric: str,
    n_boot: int,
) -> tuple[list[float | str], list[str], bool]:
    """One variant's cells under one shot: the fold values (``per_fold``: percent, means over
    seeds, by variant, shot, fold), their mean and, with several seeds, the ``95% CI`` (the mean's
    text then reads ``mean ± std``). Gives the values, their texts and whether the seeds ran the
    same folds (if not, the CI cell is empty and the mean is of the fold values)."""
    fold_vals = [per_fold.get((variant, shot, f), np.nan) for f in layout.folds]
    mean = float(np.nanmean(fold_vals)) if np.isfinite(fold_vals).any() else np.nan
    row = [*fold_vals, mean]
    text = [*map(_fmt, fold_vals), _fmt(mean)]
    if layout.n_seeds <= 1:
        return row, text, True
    mine = cells[(cells["variant"] == variant) & (cells["shot"] == shot)]
    if mine.groupby("seed")["fold"].apply(frozenset).nunique() > 1:  # seeds not comparable
        return [*row, ""], [*text, "–"], False
    by_seed = mine.groupby("seed")[metric].mean()  # each seed's mean over folds
    text[-1] = _mean_std(by_seed.mean(), by_seed.std(ddof=1), len(by_seed))
    ci = _seed_ci(data, mine, metric, n_boot)
    row.append(f"[{_num(100 * ci[0])}, {_num(100 * ci[1])}]" if ci else "")
    text.append(row[-1] or "–")
    return row, text, True


def _main_footer(
    data: ExperimentData, cells: pd.DataFrame, n_seeds: int, n_boot: int, uneven: set[str]
) -> list[str]:
    """The main table's footer lines: the provenance of ``cells``, how the std and CI were computed
    (several seeds) and which ``uneven`` variants have none."""
    footer = provenance(data, cells)
    if n_seeds > 1:
        footer.append(
            f"mean ± std over {n_seeds} seeds (std of each seed's fold mean); 95% CI: percentile bootstrap "
            f"over seeds and, within each cell, episodes ({n_boot} resamples)."
        )
    if uneven:
        footer.append(
            f"{', '.join(sorted(uneven))}: the seeds ran different folds, so the mean is of the fold values "
            "and no std or CI is shown."
        )
    return footer


def published_match(ref: Reference, cells: pd.DataFrame) -> tuple[str | None, str]:
    """The variant of ``cells`` (one dataset's cell rows) that ``ref`` sits beside, and why it is
    not compared ("" when it is). A reference without a stated scoring goes with ``ref.variant``
    (as before scorings were recorded). One with a scoring goes with the variant whose base name is
    ``ref.variant`` and whose cells at ``ref.shot`` were scored the same way; if that variant only
    ran under other scorings, with it but not compared, the reason naming both scorings."""
    if ref.scoring is None:
        return ref.variant, ""
    base = cells["base_variant"] if "base_variant" in cells else cells["variant"]
    mine = cells[(base == ref.variant) & (cells["shot"] == ref.shot)]
    if mine.empty:
        return None, ""
    scorings = list(mine["scoring"]) if "scoring" in mine else [None] * len(mine)
    same = [v for v, s in zip(mine["variant"], scorings, strict=True) if s == ref.scoring]
    if same:
        return same[0], ""
    ours = "; ".join(dict.fromkeys(s.text if s is not None else "scoring not recorded" for s in scorings))
    return str(mine["variant"].iloc[0]), f"ours {ours}, the published number {ref.scoring.text}"


def _add_published_rows(
    ref: Reference,
    layout: _MainLayout,
    rows: list[str],
    values: list[list],
    texts: list[list[str]],
    bold: list[list[bool]],
    variant: str,
    compare: bool = True,
) -> None:
    """Append to the main table (``rows``, ``values``, ``texts``, ``bold``, in place) a row with
    the published number ``ref`` (its fold values under our fold columns, when it has them) and,
    with ``compare``, one with ``variant``'s difference from it. The number goes under our mean of
    ``ref.shot`` when all folds are present, else under a column of its own
    (:data:`PUBLISHED_MEAN`, added to ``layout.columns``) with no difference of the mean."""
    columns = layout.columns
    col = columns.index((f"{ref.shot}-shot", layout.mean_label))
    ours_row = values[layout.variants.index(variant)]
    diff = ours_row[col] - ref.value if layout.all_folds and np.isfinite(ours_row[col]) else np.nan
    if not layout.all_folds:
        # a published number is a mean of all 4 folds: never under a "mean (k of 4 folds)" header
        at = col + 1 + (columns[col + 1 : col + 2] == [(f"{ref.shot}-shot", "95% CI")])  # after our CI
        col = _insert_column(columns, values, texts, bold, at, (f"{ref.shot}-shot", PUBLISHED_MEAN))
    published, difference = [np.nan] * len(columns), [np.nan] * len(columns)
    published[col], difference[col] = ref.value, diff
    for f, value in enumerate(ref.folds or ()):
        fold_col = (f"{ref.shot}-shot", f"fold{f}")
        if fold_col in columns:
            j = columns.index(fold_col)
            published[j], difference[j] = value, ours_row[j] - value
    for name, row, sign in (
        (f"{ref.method} (published)", published, False),
        *([(f"{variant} − published", difference, True)] if compare else []),
    ):
        rows.append(name)
        values.append(row)
        texts.append([_num(x, sign=sign) for x in row])
        bold.append([False] * len(columns))


PUBLISHED_MEAN = f"mean of {NUM_FOLDS} folds (published)"
"""Header of the column that holds a published number when the table has fewer than 4 folds."""


def _insert_column(
    columns: list[tuple[str, str]],
    values: list[list],
    texts: list[list[str]],
    bold: list[list[bool]],
    at: int,
    header: tuple[str, str],
) -> int:
    """Insert an empty column ``header`` at ``at`` (the existing one if it is there); its index."""
    if header in columns:
        return columns.index(header)
    columns.insert(at, header)
    for row_v, row_t, row_b in zip(values, texts, bold, strict=True):
        row_v.insert(at, np.nan)
        row_t.insert(at, _fmt(None))
        row_b.insert(at, False)
    return at


def _seed_ci(
    data: ExperimentData, cells: pd.DataFrame, metric: str, n_boot: int
) -> tuple[float, float] | None:
    """95% CI of the mean over seeds of the fold mean for one variant and shot (None: no episodes)."""
    by_seed: dict[int, list] = {}
    for _, r in cells.iterrows():
        table = data.episodes.get(r["run_id"])
        if table is None or table.empty:
            return None
        by_seed.setdefault(int(r["seed"]), []).append((table, manifest_classes(data, r["run_id"])))
    res = seed_bootstrap_ci(by_seed, metric=metric, n_boot=n_boot)
    return res["low"], res["high"]


def imr_curve_ci(data: ExperimentData, n_boot: int = 1000) -> pd.DataFrame:
    """95% CI (percent) of each point of the IMR-iterations figure: columns ``dataset, shot,
    imr_iters, low, high``. Per point, the cells of its first FSSAM variant with that many
    iterations (a percentile bootstrap over seeds and episodes within classes, as the main tables'
    CI); a point whose seeds ran different folds, or whose episodes are missing, gets no row."""
    cells = data.cells[(data.cells["method"] == "fssam") & pd.to_numeric(data.cells["imr_iters"]).notna()]
    rows = []
    for (ds, shot, iters), group in cells.groupby(["dataset", "shot", "imr_iters"], sort=True):
        first = group[group["variant"] == group["variant"].iloc[0]]
        try:
            ci = _seed_ci(data, first, "miou", n_boot)
        except MetricsError:
            ci = None
        if ci is not None:
            rows.append(
                {"dataset": ds, "shot": shot, "imr_iters": iters, "low": 100 * ci[0], "high": 100 * ci[1]}
            )
    return pd.DataFrame(rows, columns=["dataset", "shot", "imr_iters", "low", "high"])


METRIC_LABELS = {"miou": "mIoU", "fb_iou": "FB-IoU", "fg_iou": "FG-IoU"}  # one spelling in every title


def _dataset_name(ds: str) -> str:
    return {"pascal": "PASCAL-5i", "coco": "COCO-20i"}.get(ds, ds)


def reference_variant(data: ExperimentData, requested: str | None = None) -> str:
    variants = list(dict.fromkeys(data.cells["variant"]))
    if requested:
        if requested not in variants:
            from benchmark.errors import FssBenchError

            raise FssBenchError(f"--reference {requested!r} is not a variant of this experiment: {variants}")
        return requested
    for name in ("fssam", "disc-prior", "imr-3"):
        if name in variants:
            return name
    return variants[0]


def ablation_frame(data: ExperimentData, reference: str, n_boot: int = 1000) -> pd.DataFrame:
    """Per (dataset, shot, variant): mean mIoU over folds and seeds, the difference from ``reference``
    and its paired bootstrap 95% CI over episodes (pairs of cells on the same manifest)."""
    rows = []
    cells = data.cells
    for (ds, shot), group in cells.groupby(["dataset", "shot"], sort=False):
        ref = group[group["variant"] == reference].set_index("manifest_sha256")
        for variant in dict.fromkeys(group["variant"]):
            mine = group[group["variant"] == variant]
            pairs = []
            for _, r in mine.iterrows():
                if r["manifest_sha256"] in ref.index:
                    ref_run = ref.loc[r["manifest_sha256"], "run_id"]
                    if isinstance(ref_run, pd.Series):
                        ref_run = ref_run.iloc[0]
                    pairs.append(
                        (
                            data.episodes[r["run_id"]],
                            data.episodes[ref_run],
                            manifest_classes(data, r["run_id"]),
                        )
                    )
            res = paired_bootstrap_diff_over_folds(pairs, n_boot=n_boot) if pairs else None
            rows.append(
                {
                    "variant": variant,
                    "dataset": ds,
                    "shot": int(shot),
                    "miou": float(mine["miou"].mean()),
                    "diff": res["diff"] if res else np.nan,
                    "low": res["low"] if res else np.nan,
                    "high": res["high"] if res else np.nan,
                    "excludes_zero": bool(res["excludes_zero"]) if res else False,
                    "pairs": len(pairs),
                    "reference": reference,
                }
            )
    return pd.DataFrame(rows)


def ablation_table(data: ExperimentData, ablation: pd.DataFrame, dataset: str, shot: int) -> Table:
    df = ablation[(ablation["dataset"] == dataset) & (ablation["shot"] == shot)]
    ref = df["reference"].iloc[0]
    values, cells = [], []
    for _, r in df.iterrows():
        is_ref = r["variant"] == ref
        values.append([100 * r["miou"], 100 * r["diff"], 100 * r["low"], 100 * r["high"], int(r["pairs"])])
        diff, ci = difference_cells(
            100 * r["diff"], 100 * r["low"], 100 * r["high"], bool(r["excludes_zero"])
        )
        cells.append(
            [
                _fmt(100 * r["miou"]),
                "(reference)" if is_ref else diff,
                "" if is_ref else ci,
                str(int(r["pairs"])),
            ]
        )
    footer = [
        f"Δ = variant − {ref}, mIoU points; 95% paired bootstrap CI over episodes (each fold's manifest "
        "resampled within classes, 1000 resamples), * = CI excludes 0; a Δ whose CI excludes 0 is "
        "printed with the decimals that show it."
    ] + provenance(data, data.cells[(data.cells["dataset"] == dataset) & (data.cells["shot"] == shot)])
    return Table(
        title=f"Ablation on {_dataset_name(dataset)}, {shot}-shot: mIoU (%) and difference from {ref}",
        name=f"ablation-{dataset}-{shot}shot",
        columns=[("", "mIoU"), ("", "Δ"), ("", "95% CI of Δ"), ("", "paired manifests")],
        row_header="variant",
        rows=list(df["variant"]),
        cells=cells,
        values=values,
        footer=footer,
        csv_columns=["miou_pct", "delta_pts", "ci_low_pts", "ci_high_pts", "paired_manifests"],
    )


def per_class_table(data: ExperimentData, dataset: str, shot: int, fold: int) -> Table:
    """Per-class IoU (%) of each variant on one fold, mean ± std over seeds where there are several."""
    pc = data.per_class
    pc = pc[(pc["dataset"] == dataset) & (pc["shot"] == shot) & (pc["fold"] == fold)]
    classes = sorted(pc["class"].unique())
    names = dict(zip(pc["class"], pc["class_name"], strict=False))
    variants = list(dict.fromkeys(data.cells[(data.cells["dataset"] == dataset)]["variant"]))
    variants = [v for v in variants if v in set(pc["variant"])]
    stats = pc.groupby(["variant", "class"])["iou"].agg(["mean", "std", "count"])
    cells, values = [], []
    for v in variants:
        crow, vrow = [], []
        for c in classes:
            m, sd, n = stats.loc[(v, c)] if (v, c) in stats.index else (np.nan, np.nan, 0)
            vrow.append(100 * m)
            crow.append(_mean_std(m, sd, n))
        cells.append(crow)
        values.append(vrow)
    return Table(
        title=f"Per-class IoU (%) on {_dataset_name(dataset)} fold {fold}, {shot}-shot"
        + (" (mean ± std over seeds)" if (stats["count"] > 1).any() else ""),
        name=f"per-class-{dataset}-fold{fold}-{shot}shot",
        columns=[("", f"{c} {names[c]}") for c in classes],
        row_header="variant",
        rows=variants,
        cells=cells,
        values=values,
        bold=_bold_max(values),
        footer=provenance(
            data,
            data.cells[
                (data.cells["dataset"] == dataset)
                & (data.cells["fold"] == fold)
                & (data.cells["shot"] == shot)
            ],
        ),
    )


def seeds_table(data: ExperimentData, dataset: str, metric: str = "miou") -> Table | None:
    """Mean ± std over seeds per variant, shot and fold (only for studies with several seeds)."""
    cells = data.cells[data.cells["dataset"] == dataset]
    if cells["seed"].nunique() < 2:
        return None
    g = cells.groupby(["variant", "shot", "fold"], sort=False)[metric].agg(["mean", "std", "count"])
    shots, folds = sorted(cells["shot"].unique()), sorted(cells["fold"].unique())
    variants = list(dict.fromkeys(cells["variant"]))
    columns = [(f"{s}-shot", f"fold{f}") for s in shots for f in folds]
    cells_txt, values = [], []
    for v in variants:
        ct, vt = [], []
        for s in shots:
            for f in folds:
                m, sd, n = g.loc[(v, s, f)] if (v, s, f) in g.index else (np.nan, np.nan, 0)
                ct.append(_mean_std(m, sd, n))
                vt.append(100 * m)
        cells_txt.append(ct)
        values.append(vt)
    return Table(
        title=f"{METRIC_LABELS[metric]} (%) on {_dataset_name(dataset)}: mean ± std over "
        f"{cells['seed'].nunique()} seeds",
        name=f"seeds-{dataset}-{metric}",
        columns=columns,
        row_header="method",
        rows=variants,
        cells=cells_txt,
        values=values,
        footer=provenance(data, cells),
    )
