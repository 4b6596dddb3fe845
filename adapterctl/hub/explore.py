"""The Explore page: one static HTML file beside the index, so any static host serves it.

Every adapter is a table row rendered here (readable without JavaScript, escaped against
whatever a card says); a few lines of script hide the rows that do not match the task,
backbone and architecture filters and keep them in the URL (``explore.html?task=sentiment``),
so a filtered view can be linked.
"""

from __future__ import annotations

from html import escape

PAGE = "explore.html"
FILTERS = {"task": "Task", "backbone": "Backbone", "architecture": "Architecture"}

_STYLE = """
body { font: 15px/1.4 system-ui, sans-serif; margin: 2em auto; max-width: 72em; padding: 0 1em; }
form { display: flex; gap: 1.5em; margin: 1em 0; }
table { border-collapse: collapse; width: 100%; }
th, td { border-bottom: 1px solid #ddd; padding: .4em .6em; text-align: left; vertical-align: top; }
td.metrics, td.versions { white-space: nowrap; }
"""

_SCRIPT = """
const form = document.getElementById("filters");
const rows = [...document.querySelectorAll("#adapters tbody tr")];
const params = new URLSearchParams(location.search);
for (const select of form.querySelectorAll("select")) {
  const wanted = params.get(select.name);
  if (wanted && ![...select.options].some(o => o.value === wanted)) select.add(new Option(wanted, wanted));
  if (wanted) select.value = wanted;
}
function apply() {
  const wanted = [...form.querySelectorAll("select")].filter(s => s.value).map(s => [s.name, s.value]);
  let shown = 0;
  for (const row of rows) {
    row.hidden = !wanted.every(([key, value]) => row.dataset[key] === value);
    if (!row.hidden) shown++;
  }
  document.getElementById("count").textContent = `${shown} of ${rows.length} adapters`;
  const query = new URLSearchParams(wanted).toString();
  try { history.replaceState(null, "", query ? "?" + query : location.pathname); } catch (e) {}
}
form.addEventListener("change", apply);
apply();
"""


def _values(entry) -> dict:
    return {"task": entry.task, "backbone": entry.model_type, "architecture": entry.architecture}


def _select(name: str, label: str, entries) -> str:
    options = "".join(f'<option value="{escape(v)}">{escape(v)}</option>'
                      for v in sorted({_values(e)[name] for e in entries}))
    return f'<label>{label} <select name="{name}"><option value="">all</option>{options}</select></label>'


def _row(entry) -> str:
    data = " ".join(f'data-{k}="{escape(v)}"' for k, v in _values(entry).items())
    metrics = "<br>".join(f"{escape(k)} {v:.4g}" for k, v in entry.metrics.items())
    versions = ", ".join(escape(v) + (" (default)" if v == entry.default_version else "") for v in entry.versions)
    return (
        f'<tr {data} data-id="{escape(entry.id)}">'
        f'<td><a href="{escape(entry.card)}">{escape(entry.id)}</a><br><small>{escape(entry.description)}</small></td>'
        f"<td>{escape(entry.model_name or entry.model_type)}<br><small>{escape(entry.model_type)}, hidden "
        f"{entry.hidden_size}</small></td>"
        f"<td>{escape(entry.architecture)}<br><small>{escape(entry.config_hash)}</small></td>"
        f'<td class="metrics">{metrics}</td><td class="versions">{versions}</td><td>{escape(entry.license)}</td></tr>'
    )


def render(entries) -> str:
    filters = "".join(_select(name, label, entries) for name, label in FILTERS.items())
    rows = "\n".join(_row(e) for e in entries)
    return f"""<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>adapterctl Hub: explore adapters</title><style>{_STYLE}</style></head>
<body>
<h1>Explore adapters</h1>
<p>Load one with <code>model.load_adapter("task/subtask@org")</code> or
<code>adapterctl hub pull task/subtask@org</code>; the link opens its card.</p>
<form id="filters">{filters}</form>
<p id="count">{len(entries)} adapters</p>
<table id="adapters">
<thead><tr><th>Adapter</th><th>Backbone</th><th>Architecture</th><th>Metrics</th><th>Versions</th><th>License</th></tr></thead>
<tbody>
{rows}
</tbody>
</table>
<script>{_SCRIPT}</script>
</body>
</html>
"""
