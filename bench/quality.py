"""The quality gate of every weight format, both CPU engines, one model (docs/ENGINE.md).

    python -m bench.quality [--model DIR] [--engines openvino,torch] [--formats int4,int8,bf16]
                            [--max-tokens 8192] [--threads 2] [--json out.json] [--no-save]

Teacher-forced perplexity over README.md + docs/*.md against transformers' fp32 model
(services/worker/engine/quality.py). Results are saved as the model's quality record
($SLINFER_HOME/quality/), which `weights=auto` reads: the fastest format that passed is
what a deploy gets (weight_choice.py). Default model: SmolLM2-135M-Instruct
(`slinfer models build smollm2`).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from slinfer.services.worker.engine.base import EngineKind
from slinfer.services.worker.engine.quality import as_record, reference, run_gate
from slinfer.services.worker.engine.torch_config import DTypePolicy, read_cpu_flags, resolve_dtype
from slinfer.services.worker.engine.weight_choice import choose, save_result
from slinfer.services.worker.engine.weight_format import WeightFormat


def main(argv: list[str] | None = None) -> None:
    from slinfer.models import slinfer_home

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", type=Path, default=slinfer_home() / "models/smollm2-135m-instruct")
    ap.add_argument("--engines", default="openvino,torch")
    ap.add_argument("--formats", default="int4,int8,bf16")
    ap.add_argument("--max-tokens", type=int, default=8192)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--no-save", action="store_true", help="do not write the quality record")
    args = ap.parse_args(argv)
    dtype = resolve_dtype(DTypePolicy.AUTO, read_cpu_flags())
    formats = tuple(WeightFormat(f) for f in args.formats.split(","))
    rows = []
    ref = reference(args.model, max_tokens=args.max_tokens, threads=args.threads)
    for name in args.engines.split(","):
        engine = EngineKind(name)
        for r in run_gate(
            args.model,
            engine,
            formats,
            dtype,
            max_tokens=args.max_tokens,
            threads=args.threads,
            ref_data=ref,
        ):
            rows.append(as_record(r))
            if not args.no_save:
                save_result(args.model, engine, WeightFormat(r.weights), as_record(r))
            print(
                f"{r.engine:9} {r.weights:5} act={r.dtype:4} tokens={r.tokens} "
                f"ppl={r.ppl:.3f} (fp32 {r.ref_ppl:.3f}) ratio={r.ppl_ratio:.4f} "
                f"top1={r.top1_agreement:.3f} {'PASS' if r.passed else 'FAIL'} "
                f"({r.seconds:.0f} s)",
                flush=True,
            )
    for name in args.engines.split(","):
        print(f"weights=auto for {name}: {choose(EngineKind(name), args.model).value}")
    if args.json:  # merged with an earlier run's rows (one row per engine and format)
        old = json.loads(args.json.read_text())["rows"] if args.json.is_file() else []
        keep = {(r["engine"], r["weights"]) for r in rows}
        merged = [r for r in old if (r["engine"], r["weights"]) not in keep] + rows
        args.json.write_text(json.dumps({"dtype": str(dtype), "rows": merged}, indent=1))


if __name__ == "__main__":
    main()
