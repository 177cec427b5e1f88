"""The manager's job list: a plain HTML table with a check box per row (a Streamlit v2 component).

Streamlit's data grid drew the same 25 rows in about 0.6 s of the browser's first render at
125,000 jobs (a third of the page; ``docs/benchmarks.md``, the apps), most of it the grid's own
start-up. This table is built from the DOM in a few milliseconds. It reports two things back: the
positions of the ticked rows (``rows``), as the grid's row selection did, so the page keeps its
selection logic (``manager_model.merge_selection``); and, for one run, the column whose header
was clicked (``sort``), which the page turns into its sort (``manager_model.sort_after_click``).

Cells are set with ``textContent`` (never parsed as HTML: a payload or an error is shown as typed)
and cut with an ellipsis; the whole text is in the cell's tooltip and the job's detail. The
script and the styles are this module's own constants, the only code the browser runs for it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

import pandas as pd
import streamlit as st

#: The component's name (unique in the app) and the element's CSS class.
NAME: Final = "jobq_job_table"
ROW_HEIGHT_PX: Final = 35
"""Every row and the header: the page's click targets and the bench's row positions rely on it."""
CHECK_COLUMN_PX: Final = 36

CSS: Final = f"""
.jobq-jobs {{ width: 100%; border: 1px solid rgba(128, 128, 128, 0.25); border-radius: 0.5rem; overflow: hidden; }}
.jobq-jobs table {{ width: 100%; table-layout: fixed; border-collapse: collapse; font-size: 0.875rem; }}
.jobq-jobs th, .jobq-jobs td {{ height: {ROW_HEIGHT_PX}px; box-sizing: border-box; padding: 0 0.5rem;
  border-bottom: 1px solid rgba(128, 128, 128, 0.2); text-align: left; white-space: nowrap;
  overflow: hidden; text-overflow: ellipsis; }}
.jobq-jobs tr:last-child td {{ border-bottom: none; }}
.jobq-jobs th {{ font-weight: 400; opacity: 0.75; background: rgba(128, 128, 128, 0.06); }}
.jobq-jobs th[title] {{ cursor: help; }}
.jobq-jobs .num {{ text-align: right; font-variant-numeric: tabular-nums; }}
.jobq-jobs .check {{ width: {CHECK_COLUMN_PX}px; padding: 0; text-align: center; }}
.jobq-jobs .check input {{ width: 1rem; height: 1rem; margin: 0; cursor: pointer; vertical-align: middle; }}
.jobq-jobs th.sortable {{ cursor: pointer; user-select: none; }}
.jobq-jobs th.sortable:hover {{ background: rgba(128, 128, 128, 0.14); }}
.jobq-jobs th.sortable:focus-visible {{ outline: 2px solid rgba(128, 128, 128, 0.6); outline-offset: -2px; }}
.jobq-jobs th[aria-sort="descending"]::after {{ content: " \\25BE"; }}
.jobq-jobs th[aria-sort="ascending"]::after {{ content: " \\25B4"; }}
.jobq-jobs tbody tr:hover {{ background: rgba(128, 128, 128, 0.07); }}
.jobq-jobs tbody tr.picked {{ background: rgba(128, 128, 128, 0.16); }}
"""

# Rebuilt from ``data`` on every call (Streamlit calls it again when the data changes). A tick
# answers at once on the page and reports every ticked row, which reruns the page.
JS: Final = """
export default function (component) {
  const { data, parentElement, setStateValue, setTriggerValue } = component;
  let box = parentElement.querySelector(".jobq-jobs");
  if (box === null) {
    box = document.createElement("div");
    box.className = "jobq-jobs";
    parentElement.appendChild(box);
  }
  const table = document.createElement("table");
  const cols = document.createElement("colgroup");
  const head = document.createElement("tr");
  const check = document.createElement("col");
  check.style.width = data.check_px + "px";
  cols.appendChild(check);
  const corner = document.createElement("th");
  corner.className = "check";
  head.appendChild(corner);
  data.columns.forEach((c) => {
    const col = document.createElement("col");
    col.style.width = c.share + "%";
    cols.appendChild(col);
    const th = document.createElement("th");
    const name = document.createElement("span");  // the text's own box: the page tests it is never cut
    name.textContent = c.name;
    th.appendChild(name);
    if (c.help) th.title = c.help;
    if (c.num) th.className = "num";
    if (c.sort) {  // a click sorts by this column, again the other way round (the page decides)
      th.classList.add("sortable");
      th.tabIndex = 0;
      th.title = (c.help ? c.help + ". " : "") + "Click to sort by " + c.name;
      if (data.sorted === c.name) th.setAttribute("aria-sort", data.descending ? "descending" : "ascending");
      const pick = () => setTriggerValue("sort", c.name);
      th.addEventListener("click", pick);
      th.addEventListener("keydown", (e) => {
        if (e.key === "Enter" || e.key === " ") {
          e.preventDefault();
          pick();
        }
      });
    }
    head.appendChild(th);
  });
  const thead = document.createElement("thead");
  thead.appendChild(head);
  const body = document.createElement("tbody");
  const picked = new Set(data.selected);
  const report = () => setStateValue("rows",
    [...body.querySelectorAll("input")].flatMap((b, i) => (b.checked ? [i] : [])));
  data.rows.forEach((row, i) => {
    const tr = document.createElement("tr");
    const td = document.createElement("td");
    td.className = "check";
    const tick = document.createElement("input");
    tick.type = "checkbox";
    tick.checked = picked.has(i);
    tick.setAttribute("aria-label", "Select job " + row[data.id_column]);
    tick.addEventListener("change", () => {
      tr.classList.toggle("picked", tick.checked);
      report();
    });
    td.appendChild(tick);
    tr.appendChild(td);
    if (tick.checked) tr.classList.add("picked");
    row.forEach((text, j) => {
      const cell = document.createElement("td");
      cell.textContent = text;
      cell.title = text;
      if (data.columns[j].num) cell.className = "num";
      const style = data.styles[i][j];
      if (style) cell.style.cssText = style;
      tr.appendChild(cell);
    });
    body.appendChild(tr);
  });
  table.append(cols, thead, body);
  box.replaceChildren(table);
}
"""

_mount = st.components.v2.component(NAME, html="", css=CSS, js=JS, isolate_styles=False)


def job_table(
    frame: pd.DataFrame,
    *,
    key: str,
    selected: Sequence[int],
    widths: Mapping[str, int],
    helps: Mapping[str, str],
    style: Any,
    numeric: Sequence[str] = ("id",),
    sortable: Sequence[str] = (),
    sorted_by: str | None = None,
    descending: bool = True,
    on_sort: Callable[[], None] | None = None,
) -> list[int]:
    """Draw ``frame`` (its cells as text) with a check box per row; return the ticked rows'
    positions. ``selected`` are the rows ticked when the table is new (its ``key`` is new);
    ``widths`` the columns' relative widths; ``style(column, value)`` a cell's CSS ("" for none).

    ``sortable`` columns' headers can be clicked (or focused and Enter): the click is the table's
    one-run ``sort`` value (the column's name), and ``on_sort`` runs before the page's next run,
    where it may set the page's sort widgets. ``sorted_by``/``descending`` mark the header sorted by."""
    total = sum(widths.get(str(c), 100) for c in frame.columns)
    columns = [
        {
            "name": str(c),
            "share": 100 * widths.get(str(c), 100) / total,
            "help": helps.get(str(c), ""),
            "num": c in numeric,
            "sort": str(c) in sortable,
        }
        for c in frame.columns
    ]
    rows = [["" if v is None else str(v) for v in row] for row in frame.itertuples(index=False)]
    # The boxes to draw ticked: what the table reported last (its state), else ``selected``. The
    # drawing must follow the state: drawn from ``selected`` (the page's set before this run's
    # tick) a tick was undone on the page one run later, and the next tick reported it missing.
    state = st.session_state.get(key)
    ticked = state.get("rows") if isinstance(state, Mapping) else None
    shown = [r for r in (ticked if isinstance(ticked, list) else selected) if isinstance(r, int)]
    styles = [[style(str(c), v) for c, v in zip(frame.columns, row, strict=True)] for row in rows]
    data = {
        "columns": columns,
        "rows": rows,
        "styles": styles,
        "selected": shown,
        "check_px": CHECK_COLUMN_PX,
        "sorted": sorted_by,
        "descending": descending,
        "id_column": list(frame.columns).index("id") if "id" in frame.columns else 0,
    }
    result = _mount(
        key=key,
        data=data,
        default={"rows": list(selected)},
        on_rows_change=lambda: None,  # a tick reruns the page (its caption and bar count the selection)
        on_sort_change=on_sort or (lambda: None),
        height="content",
    )
    rows_ticked = result.get("rows") if hasattr(result, "get") else None
    return [int(r) for r in rows_ticked or [] if isinstance(r, int) and 0 <= r < len(rows)]
