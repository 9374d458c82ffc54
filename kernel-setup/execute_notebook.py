"""Execute one notebook headless through Jupyter (nbclient) and export it to HTML.

Called by pbip's notebook runner (src/nbrun/run.ts, `npm run notebooks`) with the
Python that has jupyter_client, nbclient and nbconvert. The executed notebook and
its HTML are written even when a cell fails, so the failure can be read in place.

Exit status: 0 all cells ran; 1 a cell raised or timed out, or the kernel died
(details in --error-json); 2 the kernel did not start or the notebook is invalid.
"""
import argparse
import json
import os
import re
import sys
import time

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def strip_ansi(text):
    return ANSI.sub("", text)


def write_atomic(path, text):
    tmp = "%s.%d.tmp" % (path, os.getpid())
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def export_html(nb, out_html, template_dir):
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(extra_template_basedirs=[template_dir], template_name="pbip_offline")
    exporter.embed_images = True
    body, _ = exporter.from_notebook_node(nb, resources={"metadata": {"name": nb.metadata.get("title", "")}})
    write_atomic(out_html, body)


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("notebook")
    ap.add_argument("--out-ipynb", required=True)
    ap.add_argument("--out-html")
    ap.add_argument("--cwd", required=True, help="working directory of the kernel")
    ap.add_argument("--kernel", default="tslab")
    ap.add_argument("--timeout", type=int, default=1800, help="seconds per cell")
    ap.add_argument("--startup-timeout", type=int, default=120)
    ap.add_argument("--error-json", required=True)
    ap.add_argument("--template-dir", required=True)
    args = ap.parse_args()

    try:
        nb = nbformat.read(args.notebook, as_version=4)
    except Exception as e:  # noqa: BLE001 - report any reading problem with the file name
        json.dump({"kind": "invalid", "message": "%s: %s" % (args.notebook, e)}, open(args.error_json, "w"))
        return 2

    code_cells = [i for i, c in enumerate(nb.cells) if c.cell_type == "code"]
    state = {"current": None, "t": 0.0}

    def on_start(cell, cell_index):
        state["current"] = cell_index
        state["t"] = time.time()
        if cell_index not in code_cells:
            return
        n = code_cells.index(cell_index) + 1
        first = (cell.source.strip().splitlines() or [""])[0][:70]
        print("  cell %d/%d: %s" % (n, len(code_cells), first), file=sys.stderr, flush=True)

    def on_executed(cell, cell_index, execute_reply):
        if cell_index not in code_cells:
            return
        dt = time.time() - state["t"]
        if dt >= 5:
            print("    (%.1f s)" % dt, file=sys.stderr, flush=True)

    client = NotebookClient(
        nb,
        timeout=args.timeout,
        startup_timeout=args.startup_timeout,
        kernel_name=args.kernel,
        allow_errors=False,
        record_timing=True,
        resources={"metadata": {"path": args.cwd}},
        on_cell_start=on_start,
        on_cell_executed=on_executed,
    )
    error = None
    status = 0
    try:
        client.execute()
    except CellTimeoutError as e:
        error = {"kind": "timeout", "message": str(e).strip().splitlines()[-1] if str(e).strip() else "cell timed out"}
        status = 1
    except DeadKernelError as e:
        error = {"kind": "dead-kernel", "message": str(e)}
        status = 1
    except CellExecutionError as e:
        error = {"kind": "error", "ename": e.ename, "evalue": strip_ansi(e.evalue or "")}
        status = 1
    except RuntimeError as e:
        # Kernel did not start (nbclient raises RuntimeError on startup timeout) or similar.
        error = {"kind": "startup", "message": strip_ansi(str(e))}
        status = 2
    except Exception as e:  # noqa: BLE001 - any other failure is reported, not hidden
        error = {"kind": "startup" if state["current"] is None else "error", "message": "%s: %s" % (type(e).__name__, strip_ansi(str(e)))}
        status = 2 if state["current"] is None else 1

    if error is not None:
        idx = state["current"]
        if idx is not None:
            cell = nb.cells[idx]
            error["cellIndex"] = idx
            error["codeCell"] = code_cells.index(idx) + 1 if idx in code_cells else None
            error["source"] = cell.source
            for out in cell.get("outputs", []):
                if out.get("output_type") == "error":
                    error["ename"] = out.get("ename", error.get("ename"))
                    error["evalue"] = strip_ansi(out.get("evalue", ""))
                    error["traceback"] = [strip_ansi(t) for t in out.get("traceback", [])]
            streams = [o.get("text", "") for o in cell.get("outputs", []) if o.get("output_type") == "stream" and o.get("name") == "stderr"]
            if streams:
                error["stderr"] = strip_ansi("".join(streams))[-4000:]
        with open(args.error_json, "w", encoding="utf-8") as f:
            json.dump(error, f)

    write_atomic(args.out_ipynb, nbformat.writes(nb))
    if args.out_html:
        try:
            export_html(nb, args.out_html, args.template_dir)
        except Exception as e:  # noqa: BLE001
            print("HTML export of %s failed: %s" % (args.notebook, e), file=sys.stderr)
            if status == 0:
                with open(args.error_json, "w", encoding="utf-8") as f:
                    json.dump({"kind": "html", "message": "HTML export failed: %s" % e}, f)
                status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
