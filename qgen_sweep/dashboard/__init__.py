"""`qgen-sweep dashboard`: a local, read-only web page over the analysis layer, live while a
sweep runs. `data` builds what it shows from the DuckDB views; `server` serves it with the page
and its assets from `static/` (shipped in the package, so it works offline)."""
