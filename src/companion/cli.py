"""The ``companion`` command line.

    companion theorem --width D --rank R --depth L --scale EPS --lr ETA --weight-decay LAM
                      --steps T [--seed S] [--scales E1,E2,...] --json
    companion compress --width D --rank R --depth L --scale EPS --lr ETA --steps T --json
    companion complete --width D --rank R --depth L --fraction P --method METHOD
                       [--rank-estimate R̂] [--gamma G] [--lr ETA] [--scale EPS] [--steps T]
                       [--tol TOL] [--seed S] --json
    companion bench completion [--quick]
    companion bench {lora,deep-lora,seeds,padding,embedding}
    companion finetune --task TASK --method lora --samples N --steps S --seed K --rank R
                       --targets {query-value,attention-mlp,all-dense} [--model NAME_OR_PATH]
                       [--lr LR] [--batch-size B] [--max-seq-length T] [--data-dir DIR] --json
    companion reproduce [--profile smoke|full] [--notebooks NAME ...] [--force]
                        [--update-baselines]
    companion reproduce --profile reference [--studies NAME ...] [--plan]
    companion report DIR [--json]
    companion recheck RECORD [--tolerance 0.01] [--log reports/reference/rechecks.jsonl]

Bad settings are one line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence


class UsageError(Exception):
    """A setting the command cannot run with (printed as one line, exit status 2)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line instead of argparse's usage + error
        raise UsageError(f"{self.prog}: {message}")


def _positive_scales(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"--scales takes numbers separated by commas, got {text!r}")
    if not values:
        raise argparse.ArgumentTypeError("--scales is empty")
    return values


def _build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="companion", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    th = sub.add_parser("theorem", help="check the invariant-subspace theorem at one setting")
    th.add_argument("--width", type=int, required=True, help="d, side of every factor")
    th.add_argument("--rank", type=int, required=True, help="r*, rank of the target")
    th.add_argument("--depth", type=int, required=True, help="L, number of factors (≥ 2)")
    th.add_argument("--scale", type=float, help="ε, the same init scale for every layer")
    th.add_argument("--scales", type=_positive_scales, help="ε_1,…,ε_L per layer (overrides --scale)")
    th.add_argument("--lr", type=float, required=True, help="η, gradient-descent step")
    th.add_argument("--weight-decay", type=float, default=0.0, help="λ (default 0)")
    th.add_argument("--steps", type=int, required=True, help="T, number of steps")
    th.add_argument("--seed", type=int, default=0, help="fixes Φ and Θ(0) (default 0)")
    th.add_argument("--rtol", type=float, default=1e-8,
                    help="σ counts as equal to ρ within this relative tolerance (default 1e-8)")
    th.add_argument("--json", action="store_true", help="print one JSON object")

    cp = sub.add_parser("compress", help="original vs compressed factorization (γ = 0): gap vs theory")
    cp.add_argument("--width", type=int, required=True, help="d")
    cp.add_argument("--rank", type=int, required=True, help="r*")
    cp.add_argument("--depth", type=int, required=True, help="L (≥ 2)")
    cp.add_argument("--scale", type=float, required=True, help="ε, every layer")
    cp.add_argument("--lr", type=float, required=True, help="η on ½‖W_{L:1} − Φ‖_F²")
    cp.add_argument("--steps", type=int, required=True, help="T")
    cp.add_argument("--rank-estimate", type=int, help="r̂ ≥ r* (default r*)")
    cp.add_argument("--seed", type=int, default=0, help="fixes Φ and Θ(0) (default 0)")
    cp.add_argument("--json", action="store_true", help="print one JSON object")

    cm = sub.add_parser("complete", help="deep matrix completion with one method")
    cm.add_argument("--width", type=int, required=True, help="d")
    cm.add_argument("--rank", type=int, required=True, help="r*")
    cm.add_argument("--depth", type=int, required=True, help="L (≥ 2)")
    cm.add_argument("--fraction", type=float, required=True, help="p, observed fraction in (0, 1]")
    cm.add_argument("--method", required=True, choices=("original", "compressed", "compressed-gamma0", "narrow"))
    cm.add_argument("--rank-estimate", type=int, help="r̂ ≥ r* for compressed/narrow (default r*)")
    cm.add_argument("--gamma", type=float, default=0.01, help="γ of the outer factors (default 0.01)")
    cm.add_argument("--lr", type=float, help="η on the mean loss (default: the paper's 5e3 at "
                    "d=1000, p=0.2, scaled by (d/1000)^(4/3)·(0.2/p))")
    cm.add_argument("--scale", type=float, default=1e-3, help="ε (default 1e-3)")
    cm.add_argument("--steps", type=int, default=200_000, help="step budget (default 200000)")
    cm.add_argument("--tol", type=float, default=1e-10, help="stop at this training loss (default 1e-10)")
    cm.add_argument("--seed", type=int, default=0, help="fixes Φ, Ω and the initialisation")
    cm.add_argument("--json", action="store_true", help="print one JSON object")

    bn = sub.add_parser("bench", help="speed benchmarks, printed as JSON")
    bn.add_argument("what", choices=("completion", "lora", "deep-lora", "seeds", "padding", "embedding"))
    bn.add_argument("--quick", action="store_true", help="smaller sizes, for a fast check")

    # Defaults and choices of `finetune` come from the dataclasses: one copy of every setting.
    from dataclasses import fields as _fields

    from companion.adapt import adapters as _adapters, bert as _bert, glue as _glue, training as _training

    run_d = {f.name: f.default for f in _fields(_training.FinetuneConfig)}
    ad_d = {f.name: f.default for f in _fields(_adapters.AdapterConfig)}
    ft = sub.add_parser("finetune", help="fine-tune BERT with adapters on a GLUE task")
    ft.add_argument("--task", required=True, choices=tuple(_glue.TASKS), help="GLUE task")
    ft.add_argument("--method", default=ad_d["method"], choices=_training.METHODS,
                    help=f"adapter method, or '{_training.FULL}' to train every weight (default {ad_d['method']})")
    ft.add_argument("--rank", type=int, default=ad_d["rank"],
                    help=f"adapter rank r: LoRA rank, narrow width, compressed rank (default {ad_d['rank']})")
    ft.add_argument("--depth", type=int, default=ad_d["depth"], help=f"Deep LoRA factors (default {ad_d['depth']})")
    ft.add_argument("--init-scale", type=float, default=ad_d["init_scale"],
                    help=f"Deep LoRA ε of the orthogonal init (default {ad_d['init_scale']:g})")
    ft.add_argument("--targets", default=ad_d["targets"],
                    help=f"{', '.join(_adapters.TARGET_SETS)}, or a regex over layer names (default {ad_d['targets']})")
    ft.add_argument("--alpha", type=float, default=ad_d["alpha"],
                    help="PEFT-style multiplier α/r of ΔW (default: none, as the paper)")
    ft.add_argument("--train-head", action="store_true", help="train the classifier head too (paper: frozen)")
    ft.add_argument("--samples", type=int, default=run_d["samples"],
                    help="few-shot size, drawn with replacement (default: the whole train split)")
    ft.add_argument("--steps", type=int, default=run_d["steps"], help=f"optimizer steps (default {run_d['steps']})")
    ft.add_argument("--seed", type=int, default=run_d["seed"], help="fixes subset, init, dropout and order")
    ft.add_argument("--model", default=run_d["model"],
                    help=f"local folder, 'minilm' (packaged), or a hub name (default {run_d['model']})")
    ft.add_argument("--pooling", default=run_d["pooling"], choices=_bert.POOLINGS,
                    help="what the new head reads: BERT's pooler (the paper's) or the mean of the last hidden "
                         "states (default: the backbone's; mean for the packaged MiniLM, whose pooler is untrained)")
    ft.add_argument("--num-layers", type=int, default=run_d["num_layers"],
                    help="keep the first k encoder layers (default: all)")
    ft.add_argument("--lr", type=float, default=run_d["lr"], help=f"AdamW learning rate (default {run_d['lr']:g})")
    ft.add_argument("--lr-end", type=float, default=run_d["lr_end"],
                    help="decay linearly to this rate (default: constant, as the paper)")
    ft.add_argument("--gamma", type=float, default=run_d["gamma"],
                    help=f"compressed Deep LoRA: outer step ratio γ (default {run_d['gamma']:g})")
    ft.add_argument("--inner-lr", type=float, default=run_d["inner_lr"],
                    help="compressed Deep LoRA: inner step (default: --lr)")
    ft.add_argument("--batch-size", type=int, default=run_d["batch_size"], help=f"default {run_d['batch_size']}")
    ft.add_argument("--max-seq-length", type=int, default=run_d["max_seq_length"],
                    help=f"longer examples are dropped (default {run_d['max_seq_length']})")
    ft.add_argument("--eval-examples", type=int, default=run_d["eval_examples"],
                    help="evaluate on the first N validation examples (default: all)")
    ft.add_argument("--data-dir", default=run_d["data_dir"], help="GLUE folder (default: COMPANION_DATA_DIR)")
    ft.add_argument("--online", action="store_true", help="allow downloads from the Hugging Face hub")
    ft.add_argument("--numerical-ranks", action="store_true", help="also print each update's numerical rank")
    ft.add_argument("--run-dir", help="write config.json, results.json and the adapter here (must be new)")
    ft.add_argument("--json", action="store_true", help="print one JSON object")

    rp = sub.add_parser("reproduce", help="execute the notebooks with papermill, or run the reference studies")
    rp.add_argument("--profile", choices=("smoke", "full", "reference"), default="smoke",
                    help="smoke or full: execute the notebooks; reference: run or resume the studies of "
                         "companion.book.reference into reports/reference/ (the paper's protocol on MiniLM)")
    rp.add_argument("--studies", nargs="+", help="reference profile: the studies to run (default: all)")
    rp.add_argument("--plan", action="store_true",
                    help="reference profile: print each study's runs recorded and left and the time left; run nothing")
    rp.add_argument("--notebooks", nargs="+", help="names without .ipynb (default: all)")
    rp.add_argument("--force", action="store_true", help="run 'full' without a GPU")
    rp.add_argument("--root", help="repository root (default: found from the working directory)")
    rp.add_argument("--results-dir", help="results root (default: <root>/results)")
    rp.add_argument("--update-baselines", action="store_true",
                    help="after a smoke run, overwrite baselines/smoke with its outputs")
    rp.add_argument("--timeout", type=int, help="per-cell timeout in seconds")

    rc = sub.add_parser("recheck", help="run one stored study record again and compare its score")
    rc.add_argument("record", help="a record file, e.g. reports/reference/fewshot-stsb/<key>.json")
    rc.add_argument("--tolerance", type=float, default=0.01,
                    help="largest |difference| of the validation score that counts as the same (default 0.01)")
    rc.add_argument("--log", help="append the result to this JSON-lines file, e.g. reports/reference/rechecks.jsonl "
                                  "(chapter 8 shows the rechecks logged there)")

    rt = sub.add_parser("report", help="judge the paper's claims from a folder of study records and chapter runs")
    rt.add_argument("folder", help="a results folder: its study records, and its full-profile runs of chapters 1-4 "
                                   "(.../full/<notebook>/), are found at any depth")
    rt.add_argument("--json", action="store_true", help="one JSON object per claim, one per line")
    return parser


def _theorem(args: argparse.Namespace) -> dict:
    from companion.linear.factorization import FactorizationSetting

    if args.scales is None and args.scale is None:
        raise UsageError("companion theorem: give --scale EPS (or --scales E1,…,EL)")
    scales = args.scales if args.scales is not None else (args.scale,) * max(args.depth, 0)
    try:
        setting = FactorizationSetting(
            width=args.width, target_rank=args.rank, depth=args.depth, init_scales=tuple(scales), lr=args.lr,
            weight_decay=args.weight_decay, steps=args.steps, seed=args.seed,
        )
    except ValueError as e:
        raise UsageError(f"companion theorem: {e}") from None
    from companion.linear.theory import check_theorem

    try:
        run = check_theorem(setting, rtol=args.rtol, angles=False)
    except ValueError as e:
        raise UsageError(f"companion theorem: {e}") from None
    out = run.summary()
    out["holds"] = bool(out["min_count"] >= out["required_count"])
    out["wall_time_s"] = round(run.wall_time_s, 3)
    out["settings"] = {
        "width": setting.width, "rank": setting.target_rank, "depth": setting.depth,
        "scales": list(setting.init_scales), "lr": setting.lr, "weight_decay": setting.weight_decay,
        "steps": setting.steps, "seed": setting.seed, "rtol": args.rtol,
    }
    return out


def _compress(args: argparse.Namespace) -> dict:
    from companion.linear.compression import compress_point
    from companion.linear.factorization import FactorizationSetting

    try:
        setting = FactorizationSetting(
            width=args.width, target_rank=args.rank, depth=args.depth,
            init_scales=(args.scale,) * max(args.depth, 0), lr=args.lr, weight_decay=0.0,
            steps=args.steps, seed=args.seed,
        )

        out = compress_point(setting, args.rank_estimate)
    except ValueError as e:
        raise UsageError(f"companion compress: {e}") from None
    out["settings"] = {"width": args.width, "rank": args.rank, "depth": args.depth, "scale": args.scale,
                       "lr": args.lr, "steps": args.steps, "seed": args.seed, "gamma": 0.0}
    return out


def _divisor_at_most(n: int, cap: int) -> int:
    """The largest divisor of n that is at most cap (a record interval that divides the budget)."""
    return max(k for k in range(1, min(n, cap) + 1) if n % k == 0)


def _complete(args: argparse.Namespace) -> dict:
    from companion.bench import completion as benchmarks
    from companion.linear import completion

    try:
        if args.steps < 1:
            raise ValueError(f"steps must be ≥ 1, got {args.steps}")
        r_hat = args.rank_estimate if args.rank_estimate is not None else args.rank
        completion.validate(args.width, args.rank, args.fraction,
                            None if args.method == "original" else r_hat)
        lr = args.lr if args.lr is not None else benchmarks.lr_for(args.width, args.fraction)
        problem = completion.make_problem(completion.problem_key(args.seed), args.width, args.rank,
                                          args.fraction)
        run = completion.run_method(
            args.method, problem, depth=args.depth, init_scale=args.scale, lr=lr, rank_estimate=r_hat,
            gamma=args.gamma, budget=args.steps, tol=args.tol, seed=args.seed,
            record_every=_divisor_at_most(args.steps, 100),
        )
    except ValueError as e:
        raise UsageError(f"companion complete: {e}") from None
    out = run.summary()
    out["wall_time_s"] = round(out["wall_time_s"], 4)
    out["compile_time_s"] = round(run.compile_time_s, 3)
    out["settings"] = {"width": args.width, "rank": args.rank, "depth": args.depth,
                       "fraction": args.fraction, "method": args.method,
                       "rank_estimate": None if args.method == "original" else r_hat,
                       "gamma": args.gamma if args.method == "compressed" else 0.0, "lr": lr,
                       "scale": args.scale, "steps": args.steps, "tol": args.tol, "seed": args.seed}
    return out


def _finetune(args: argparse.Namespace) -> dict:
    from companion.adapt.adapters import AdapterConfig
    from companion.adapt.training import FULL, FinetuneConfig, finetune

    try:
        if args.method == FULL and args.train_head:
            raise ValueError("--train-head applies to adapters; full fine-tuning trains every weight, the head too")
        adapter = None if args.method == FULL else AdapterConfig(
            method=args.method, rank=args.rank, depth=args.depth, init_scale=args.init_scale,
            targets=args.targets, alpha=args.alpha, train_head=args.train_head)
        cfg = FinetuneConfig(
            task=args.task, adapter=adapter, samples=args.samples, steps=args.steps, seed=args.seed,
            model=args.model, pooling=args.pooling, num_layers=args.num_layers, lr=args.lr, lr_end=args.lr_end, gamma=args.gamma,
            inner_lr=args.inner_lr, batch_size=args.batch_size, max_seq_length=args.max_seq_length,
            eval_examples=args.eval_examples, data_dir=args.data_dir, online=args.online,
        )
        result = finetune(cfg, run_dir=args.run_dir, progress=not args.json and sys.stderr.isatty())
    except (ValueError, FileNotFoundError, FileExistsError) as e:
        raise UsageError(f"companion finetune: {e}") from None
    keys = ("task", "method", "metric", "value", "metrics", "initial_value", "steps", "seed",
            "trainable_params", "adapted_layers", "wall_time_s", "step_time_s", "compile_time_s",
            "n_train", "dropped_train", "n_validation", "dropped_validation", "backbone", "device")
    out = {k: getattr(result, k) for k in keys}
    # The verdict first: a run is a result only if it fitted its training data.
    out = {"fitted": result.fitted, "first_train_loss": result.first_loss, "last_train_loss": result.last_loss,
           "last_over_first": result.last_loss / result.first_loss if result.first_loss > 0 else float("nan"),
           "constant_prediction_loss": result.constant_loss, **out}
    if args.numerical_ranks and result.numerical_ranks is not None:
        out["numerical_ranks"] = result.numerical_ranks
    return out


# What ``companion reproduce`` imports from the ``book`` extra (pyproject.toml).
BOOK_EXTRA_MODULES = ("papermill", "ipykernel", "nbformat")


def _require_book_extra() -> None:
    """Stop with one line when the ``book`` extra (papermill and a Jupyter kernel) is missing."""
    import importlib.util

    missing = [m for m in BOOK_EXTRA_MODULES if importlib.util.find_spec(m) is None]
    if missing:
        raise UsageError(f"companion reproduce needs the book extra ({', '.join(missing)} not installed): "
                         "pip install 'companion[book]' (or `make setup`)")


def _reference(args: argparse.Namespace) -> dict:
    """``reproduce --profile reference``: run or resume the reference studies and the linear
    chapters' full runs (or print the plan), in ``reference.ORDER``."""
    from companion.book import notebooks as runner, reference, studies

    if args.notebooks or args.update_baselines:
        raise UsageError("companion reproduce: --notebooks and --update-baselines apply to smoke and full, "
                         "not to the reference profile (use --studies)")
    unknown = sorted(set(args.studies or ()) - set(reference.ORDER))
    if unknown:
        raise UsageError(f"companion reproduce: unknown reference study {unknown}; choose from "
                         + ", ".join(reference.ORDER))
    repository = runner.repository_root(args.root)
    root = repository / reference.FOLDER
    names = [n for n in reference.ORDER if not args.studies or n in args.studies]
    out: dict = {"profile": "reference", "root": str(root), "studies": {}}
    try:
        if args.plan:
            chosen = {s.name: s for s in reference.plan() if s.name in names}
            for n in names:
                print(reference.chapter_status(root, n) if n in reference.CHAPTERS else reference.describe([chosen[n]], root))
            out["plan"] = True
            return out
        for n in names:
            say = lambda line: print(line, file=sys.stderr)  # noqa: E731 (progress on stderr, JSON on stdout)
            if n in reference.CHAPTERS:
                reference.run_chapters(root, [n], repository=repository, say=say, timeout_s=args.timeout)
                out["studies"][n] = {"stored": reference.chapter_done(root, n)}
            else:
                st = reference.run(root, [n], say=say)[n]
                out["studies"][n] = {"recorded": st.recorded, "total": st.total}
    except studies.RecordError as e:
        raise UsageError(f"companion reproduce: {e}") from None
    return out


def _reproduce(args: argparse.Namespace) -> dict:
    if args.profile == "reference":
        return _reference(args)
    if args.studies or args.plan:
        raise UsageError("companion reproduce: --studies and --plan apply to the reference profile only")
    _require_book_extra()
    from companion.book import regression as baselines, notebooks as runner

    if args.update_baselines and args.profile != "smoke":
        raise UsageError("companion reproduce: --update-baselines applies to the smoke profile only")
    runs = runner.reproduce(
        args.profile, args.notebooks, root=args.root, results_dir=args.results_dir,
        force=args.force, timeout_s=args.timeout,
    )
    report = {"profile": args.profile, "notebooks": {}}
    root = runner.repository_root(args.root)
    for r in runs:
        entry = {"executed": str(r.executed), "results": str(r.results),
                 "wall_time_s": round(r.wall_time_s, 1)}
        if args.update_baselines and baselines.has_baseline(r.notebook):
            target = root / "baselines" / "smoke" / r.notebook
            entry["baseline_files"] = [str(p.relative_to(root)) for p in baselines.update(r.results, target)]
        report["notebooks"][r.notebook] = entry
    return report


def _recheck(args: argparse.Namespace) -> int:
    """``companion recheck RECORD``: 0 when the rerun's score agrees with the stored one, else 1."""
    from companion.book import studies

    if not args.tolerance > 0:
        raise UsageError(f"companion recheck: --tolerance must be positive, got {args.tolerance}")
    if args.log and studies._RECORD_NAME.match(Path(args.log).name):  # refused before minutes of training
        raise UsageError(f"companion recheck: --log {args.log} is named like a study record; "
                         f"give it another name, e.g. {studies.RECHECK_LOG}")
    try:
        checked = studies.recheck(args.record, args.tolerance)
    except studies.RecordError as e:
        raise UsageError(f"companion recheck: {e}") from None
    print(checked.describe())
    if args.log:
        try:
            print(f"logged in {studies.append_recheck(checked, args.log)}")
        except ValueError as e:
            raise UsageError(f"companion recheck: {e}") from None
    return 0 if checked.agrees else 1


def _report(args: argparse.Namespace) -> None:
    from dataclasses import asdict

    from companion.book import report, studies

    try:
        records = studies.find_records(args.folder)
        # With GLUE data here ($COMPANION_DATA_DIR), each task's row also shows the score of always
        # answering the majority class; without it the table is the records' alone.
        rows = report.claims(records, floors=report.glue_floors(records))
        linear = report.linear_comparison(args.folder)
    except studies.RecordError as e:
        raise UsageError(f"companion report: {e}") from None
    except ValueError as e:  # a GLUE file under $COMPANION_DATA_DIR that cannot be read
        raise UsageError(f"companion report: {e}; fix the file or unset COMPANION_DATA_DIR") from None
    if args.json:
        for row in rows:
            print(json.dumps(asdict(row)))
        for row in linear:  # the linear half's rows carry "quantity" where the claims carry "claim"
            print(json.dumps(asdict(row)))
    else:
        print(report.markdown(rows))
        if rows:
            print("\n" + report.in_brief(rows))
        if linear:
            print("\nThe linear half at the full profile, beside the paper:\n")
            print(report.linear_markdown(linear))


def _emit(out: dict, as_json: bool) -> None:
    """One JSON object (``--json``), or one ``key: value`` line per field."""
    if as_json:
        print(json.dumps(out))
    else:
        for key, value in out.items():
            print(f"{key}: {value}")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``companion`` console script; returns the exit status."""
    parser = _build_parser()
    try:
        args = parser.parse_args(argv)
        commands = {"theorem": _theorem, "compress": _compress, "complete": _complete, "finetune": _finetune}
        if args.command in commands:
            _emit(commands[args.command](args), args.json)
        elif args.command == "bench":
            if args.what == "completion":
                from companion.bench.completion import completion_benchmark

                print(json.dumps(completion_benchmark(quick=args.quick), indent=2))
            else:
                from companion.bench import lora as lora_bench

                run = {"lora": lora_bench.run, "deep-lora": lora_bench.run_deep, "seeds": lora_bench.run_seeds,
                       "padding": lora_bench.run_padding, "embedding": lora_bench.run_embedding}
                print(json.dumps(run[args.what](), indent=2))
        elif args.command == "reproduce":
            print(json.dumps(_reproduce(args), indent=2))
        elif args.command == "report":
            _report(args)
        elif args.command == "recheck":
            return _recheck(args)
    except UsageError as e:
        print(str(e).splitlines()[0], file=sys.stderr)
        return 2
    except (FileNotFoundError, RuntimeError) as e:
        print(f"companion: {e}".splitlines()[0], file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
