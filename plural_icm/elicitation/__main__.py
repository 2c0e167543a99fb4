"""``python -m plural_icm.elicitation {create,invite,serve,status,export} ...``

  create  --study S.db --k 4 --method confidence [--folds 0 1 2 3] [--annotators N]
          [--layout one-per-page|form] [--base-url URL] [--run-searches]
          -- <launch.py overrides: model=... dataset=...>
  invite  --study S.db --persona P [--annotators N] [--base-url URL]     more invitation links
  serve   --study S.db [--host 127.0.0.1] [--port 8765]
  status  --study S.db                                                 the researcher's table, as text
  export  --study S.db --out answers.jsonl [--on-tie error|first] [--partial]

S.db is a SQLite file; where a team has a database server, a postgresql://user@host/db URL instead
(the URL's password is never printed; better: leave it out and use ~/.pgpass or PGPASSWORD).
Invitation links and the researcher's link are printed once (only their hashes are stored).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from plural_icm.errors import UserError


def _links(base: str, invites: dict[str, list[tuple[str, str]]]) -> None:
    for pid, pairs in invites.items():
        for annotator, token in pairs:
            print(f"  {pid:<16} {annotator:<12} {base}/a/{token}")


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m plural_icm.elicitation", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    c = sub.add_parser("create", help="a study from finished ICM searches")
    c.add_argument("--study", required=True,
                   help="the study file to create (SQLite), or a postgresql:// URL of an empty database")
    c.add_argument("--k", type=int, required=True, help="questions per persona and fold")
    c.add_argument("--method", default="confidence", choices=["confidence", "active", "random"])
    c.add_argument("--folds", type=int, nargs="*", help="default: the config's fold")
    c.add_argument("--annotators", type=int, default=1, help="invitation links per persona")
    c.add_argument("--name", help="the study's name (default: the file's stem)")
    c.add_argument("--instruction", help="the sentence telling annotators what to answer")
    c.add_argument("--layout", default="one-per-page", choices=["one-per-page", "form"],
                   help="the annotator's page: one question per page (default), or all on one form")
    c.add_argument("--base-url", default="http://127.0.0.1:8765", help="where `serve` will listen")
    c.add_argument("--run-searches", action="store_true",
                   help="run the ICM searches that are not finished (default: refuse)")
    c.add_argument("overrides", nargs="*", help="launch.py overrides, after --")
    i = sub.add_parser("invite", help="more invitation links for one persona")
    i.add_argument("--study", required=True)
    i.add_argument("--persona", required=True)
    i.add_argument("--annotators", type=int, default=1)
    i.add_argument("--base-url", default="http://127.0.0.1:8765")
    s = sub.add_parser("serve", help="serve the study's pages")
    s.add_argument("--study", required=True)
    s.add_argument("--host", default="127.0.0.1", help="default 127.0.0.1 (this machine only)")
    s.add_argument("--port", type=int, default=8765, help="0: any free port (printed)")
    s.add_argument("--threads", type=int, default=8)
    st = sub.add_parser("status", help="invitations and agreement, as text")
    st.add_argument("--study", required=True)
    e = sub.add_parser("export", help="the answers file stage=collaborative reads")
    e.add_argument("--study", required=True)
    e.add_argument("--out", required=True)
    e.add_argument("--on-tie", default="error", choices=["error", "first"])
    e.add_argument("--partial", action="store_true", help="export even if questions lack answers")
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return _run(args)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    from plural_icm.elicitation.store import StudyStore, redact

    if args.command == "create":
        from plural_icm.elicitation.study import create_study

        store, researcher, invites = create_study(
            args.study, args.overrides, args.method, args.k, args.folds, args.annotators, args.name,
            args.instruction, args.run_searches, args.layout)
        base = args.base_url.rstrip("/")
        n_q = {p: len(store.questions(p)) for p in invites}
        print(f"{store.where}: {sum(n_q.values())} questions "
              f"({', '.join(f'{p}: {n}' for p, n in n_q.items())})")
        print("invitation links (shown once; only their hashes are stored):")
        _links(base, invites)
        print(f"researcher's view (keep it private): {base}/r/{researcher}")
        print(f"serve it: python -m plural_icm.elicitation serve --study "
              f"{args.study if store.url is None else redact(args.study)}")
        return 0
    store = StudyStore(args.study).open_checked()
    if args.command == "invite":
        _links(args.base_url.rstrip("/"), {args.persona: store.add_invitations(args.persona, args.annotators)})
        return 0
    if args.command == "serve":
        from plural_icm.elicitation.server import serve

        serve(args.study, args.host, args.port, args.threads)
        return 0
    if args.command == "status":
        from plural_icm.elicitation.export import summarise

        for p in summarise(store):
            kappa = "—" if p.kappa is None else f"{p.kappa:.2f}"
            print(f"{p.persona_id}: invited {p.invited}, opened {p.opened}, started {p.started}, "
                  f"finished {p.finished}, Fleiss' kappa {kappa}")
            for s in p.questions:
                state = "tie" if s.votes.tie else (s.votes.majority or "—")
                print(f"  {s.question.group_id}: votes {dict(s.votes.votes)} majority {state} "
                      f"drafts {s.drafts}")
        return 0
    if args.command == "export":
        from plural_icm.elicitation.export import export_answers

        rows = export_answers(store, args.out, args.on_tie, args.partial)
        meta = store.meta()
        print(f"wrote {len(rows)} answers to {args.out}; re-search with:\n  python launch.py "
              f"experiment=collaborative {' '.join(meta.get('overrides', []))} "
              f"collaborative.k_per_fold={meta['k_per_fold']} collaborative.selection=[{meta['method']}] "
              f"collaborative.answers_file={args.out} fold=<each of {meta['folds']}>")
        return 0
    raise AssertionError(args.command)


if __name__ == "__main__":
    sys.exit(main())
