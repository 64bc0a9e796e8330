"""``data translate`` speed on CPU: items/s of the CLI and what the filters dropped (bench/RESULTS.md).

    python bench/data_translate_bench.py --translator runs/demo-hu/pretrain/final [--batch-size 8]

Translates :data:`MESSAGES` (16 short English chat messages, some with inline code, placeholders or a URL,
one item each) into Hungarian with the few-shot prompt built from the packaged en-hu pairs, in a
subprocess of the CLI, and prints the summary: items/s (translation and round trip), kept, drops by reason.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PAIRS = Path(__file__).resolve().parents[1] / "src" / "langadapt" / "demo_data" / "en-hu-pairs.jsonl.gz"
MESSAGES = [
    "Open the Tools menu and choose Options.",
    "How do I insert a new table into my document?",
    "Click the Save button to save the file.",
    "The spreadsheet has three sheets.",
    "Select the text and press `Ctrl+B` to make it bold.",
    "Hello {name}, your report is ready.",
    "Where can I change the page margins?",
    "You can find the help pages at https://help.libreoffice.org for more information.",
    "Choose Format - Paragraph to change the line spacing.",
    "The macro prints %s lines to the console.",
    "Please restart the program after the update.",
    "Insert a chart from the Insert menu.",
    "This dialog shows the properties of the selected object.",
    "Set the variable $HOME before you run the script.",
    "Drag the image to the position you want.",
    "The document was saved in the default format.",
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--translator", required=True)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--shots", type=int, default=4)
    ap.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="more data translate options")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "chat.jsonl"
        data.write_text("".join(json.dumps({"messages": [{"role": "user", "content": m}]}) + "\n"
                                for m in MESSAGES))  # fmt: skip
        out = Path(tmp) / "out"
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "langadapt.cli", "data", "translate", "--input", str(data),
                        "--translator", args.translator, "--pairs", str(PAIRS), "--tgt", "hu", "--shots",
                        str(args.shots), "--batch-size", str(args.batch_size), "--out", str(out), *args.extra],
                       check=True)  # fmt: skip
        wall = time.perf_counter() - started
        summary = json.loads((out / "summary.json").read_text())
        kept = [json.loads(line) for line in (out / "translated" / "chat.jsonl").read_text().splitlines()]
        rejects = [json.loads(line) for line in (out / "rejects.jsonl").read_text().splitlines()]
    print(json.dumps({k: summary[k] for k in ("items", "kept", "dropped", "items_per_second", "translate_seconds",
                                             "round_trip_chrf_mean_kept", "bf16")}, indent=1))  # fmt: skip
    print(f"wall (process start, model load, translation, writing): {wall:.1f} s")
    for r in kept:
        print("kept:", r["messages"][0]["content"])
    for r in rejects:
        print(f"dropped ({r['reason']}: {r['detail']}):", r["translation"]["messages"][0]["content"][:100])


if __name__ == "__main__":
    main()
