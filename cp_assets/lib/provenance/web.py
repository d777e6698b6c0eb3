"""`cprox serve`: the provenance explorer, a FastAPI app over one warm `Explainer` (no dagster).

Routes (JSON unless said):
  GET  /                      the page (explorer.html: plain HTML and JS, no build step)
  POST /api/explain           {"text": ...} -> explain's answer; 400 with the reason for a bad text
  GET  /api/rollouts          ?eval_set=&model_id=&correct=true|false&limit= -> rollouts to pick (id, model, eval set,
                              correctness, question snippet) and the filters' choices
  GET  /api/rollout/{id}      explain's answer for a stored rollout (MODEL/SAMPLE_ID, URL-encoded), with its
                              membership scores; 404 for an unknown id
  GET  /api/document          ?split=&doc_id=&start=&end= -> the document's text around [start, end) (the span in
                              context), 404 when there is no such document
The page also reads `?text=` and `?rollout=` from its URL, which is how the Dagster UI's metadata tables link to it.
There is no authentication: `serve` binds 127.0.0.1 and warns when told to listen anywhere else.
"""

from __future__ import annotations

import time
from pathlib import Path

from pydantic import BaseModel

from cp_assets.lib.provenance.explain import ExplainError, Explainer, check_text, rollout_text

PAGE = Path(__file__).with_name("explorer.html")
LOOPBACK = ("127.0.0.1", "localhost", "::1")
CONTEXT_CHARS = 600


def loopback_warning(host: str) -> str | None:
    if host in LOOPBACK:
        return None
    return (f"WARNING: serving on {host}, not loopback: the explorer has no authentication, and anyone who can reach "
            f"this address can read the corpus and the results database through it")


class Query(BaseModel):
    """The body of POST /api/explain (module level: FastAPI resolves the annotation by name)."""

    text: str


def create_app(explainer: Explainer):
    from fastapi import FastAPI, HTTPException
    from fastapi.responses import HTMLResponse

    app = FastAPI(title="corpus-proximity explorer")

    @app.get("/", response_class=HTMLResponse)
    def page() -> str:
        return PAGE.read_text()

    @app.post("/api/explain")
    def explain(q: Query) -> dict:
        try:
            return explainer.explain(check_text(q.text))
        except ExplainError as exc:
            raise HTTPException(400, str(exc)) from None

    @app.get("/api/rollouts")
    def rollouts(eval_set: str | None = None, model_id: str | None = None, correct: bool | None = None,
                 limit: int = 200) -> dict:
        where, args = [], []
        for col, val in (("eval_set", eval_set), ("model_id", model_id), ("correct", correct)):
            if val is not None and val != "":
                where.append(f"{col} = ?")
                args.append(val)
        sql = ("SELECT model_id, sample_id, eval_set, correct, prompt, completion FROM rollouts"
               + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY eval_set, model_id, sample_id "
               f"LIMIT {max(1, min(int(limit), 2000))}")
        with explainer.db.connect(read_only=True) as con:
            have = {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
            if "rollouts" not in have:
                return {"rollouts": [], "eval_sets": [], "models": []}
            rows = con.execute(sql, args).fetchall()
            sets = [r[0] for r in con.execute("SELECT DISTINCT eval_set FROM rollouts ORDER BY 1").fetchall()]
            models = [r[0] for r in con.execute("SELECT DISTINCT model_id FROM rollouts ORDER BY 1").fetchall()]
        return {"eval_sets": sets, "models": models,
                "rollouts": [{"id": f"{m}/{s}", "model_id": m, "sample_id": s, "eval_set": e, "correct": c,
                              "question": (p or "")[:160], "answer": (a or "")[:160]} for m, s, e, c, p, a in rows]}

    @app.get("/api/rollout/{rollout_id:path}")
    def rollout(rollout_id: str) -> dict:
        try:
            text, source, membership = rollout_text(explainer.db, rollout_id)
            return explainer.explain(check_text(text), membership=membership, sources=source)
        except ExplainError as exc:
            raise HTTPException(404 if "no rollout" in str(exc) else 400, str(exc)) from None

    @app.get("/api/document")
    def document(split: str, doc_id: str, start: int | None = None, end: int | None = None) -> dict:
        t0 = time.perf_counter()
        body = explainer.store.document_texts(split, [doc_id]).get(doc_id)
        if body is None:
            raise HTTPException(404, f"no document {doc_id!r} in split {split!r}")
        if start is None or end is None:
            a, b = 0, min(len(body), 2 * CONTEXT_CHARS)
            start = end = None
        else:
            a, b = max(0, start - CONTEXT_CHARS), min(len(body), end + CONTEXT_CHARS)
        return {"split": split, "doc_id": doc_id, "chars": len(body), "from": a, "to": b, "text": body[a:b],
                "span_start": None if start is None else start - a, "span_end": None if end is None else end - a,
                "seconds": round(time.perf_counter() - t0, 3)}

    return app
