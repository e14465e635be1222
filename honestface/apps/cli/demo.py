"""`honestface-demo` (also `python scripts/demo.py`): the web demo (honestface/apps/demo.py) on a local address.

    honestface-demo --model runs/honestface/final                  # a HonestFace or VSPBFR folder
    honestface-demo --model org/name                               # a Hugging Face Hub id
    honestface-demo                                                # the quickstart's export, when it exists

Opens http://127.0.0.1:7860 (--host / --port to change; --host 0.0.0.0 serves other machines of the network).
Needs the `demo` extra (`pip install honestface[demo]`; the repository's lock installs it). Exit codes: 0 when the
server stops, 2 when Gradio is missing or a --model path does not exist (one `error:` line).
"""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

from honestface.apps.cli.common import fail, invocation, log, start_logging
from honestface.log import add_logging_arguments

DESCRIPTION = ("Serve the web demo: restore an uploaded photo (optionally with reference photos of the person) in the "
               "browser, compare it with the input and see each face's identity similarity to the references.")


def build_parser(prog: str = "honestface-demo") -> argparse.ArgumentParser:
    from honestface.apps.demo import MAX_PIXELS, QUICKSTART_MODEL

    examples = __doc__.split("\n\n", 1)[1].replace("honestface-demo", invocation(prog))
    parser = argparse.ArgumentParser(prog=prog, description=DESCRIPTION, epilog=f"examples:\n{examples}",
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", action="append", default=[], metavar="DIR_OR_HUB_ID",
                        help="a model to offer (repeat for several); the quickstart's export "
                             f"({QUICKSTART_MODEL}) is added when it exists")
    parser.add_argument("--host", default="127.0.0.1", help="address to serve on (default: %(default)s)")
    parser.add_argument("--port", type=int, default=7860, help="port (default: %(default)s)")
    parser.add_argument("--max-pixels", type=int, default=MAX_PIXELS,
                        help="largest accepted upload in pixels (default: %(default)s)")
    add_logging_arguments(parser)
    return parser


def main(argv: list[str] | None = None, prog: str = "honestface-demo") -> int:
    args = build_parser(prog).parse_args(argv)
    start_logging(args)
    from honestface.hub import is_hub_id

    for model in args.model:
        if not is_hub_id(model) and not Path(model).exists():
            from honestface.released_table import is_released_name

            if not is_released_name(model):
                return fail(f"--model {model}: no such folder (pass a saved model folder or a Hub id org/name)")
    if importlib.util.find_spec("gradio") is None:
        return fail("the demo needs Gradio: pip install 'honestface[demo]' (or install requirements.lock.txt)")
    from honestface.apps.demo import NO_MODEL, available_models, build_demo

    if not available_models(args.model):
        log.warning(NO_MODEL)
    demo = build_demo(args.model)
    print(f"demo: http://{args.host}:{args.port} (Ctrl+C stops it)")
    # uploads over 200 MB are refused by Gradio itself (a message in the page) before they reach the disk
    demo.launch(server_name=args.host, server_port=args.port, share=False, ssr_mode=False, max_file_size="200mb")
    return 0
