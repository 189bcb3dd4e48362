"""What a person reads on the console: our own log lines, third-party ones only from WARNING up, and
progress bars only on a terminal.

`configure_console` runs before a verb's body (rayjobs.common.run_entry) and before `ray`, Ray Data,
transformers or faiss are imported, so it works through the environment variables those libraries read
at import (which Ray workers started by this process inherit too). `configure_ray_output` runs right after
`import ray` (rayjobs.common.init_ray) for what only a live Ray Data can set. Off a terminal (CI, log files,
`crs run > log`) Ray Data's progress dumps and tqdm bars are off; crs_core.progress then logs long loops
at most once a minute.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sys

from crs_core.progress import LOG_LEVEL_ENV, PROGRESS_ENV

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
OWN_LOGGERS = ("crs_core", "rayjobs")
# Third-party libraries stay one step quieter than our own loggers, and never below WARNING unless debugging.
THIRD_PARTY_LEVELS = {"DEBUG": "INFO", "INFO": "WARNING", "WARNING": "WARNING", "ERROR": "ERROR"}
LOG_FORMAT = "%(asctime)s %(name)s: %(message)s"
# Ray Data's own notes about its progress UI ("Progress bars disabled ...", "Run `pip install rich` ...").
RAY_DATA_PROGRESS_LOGGER = "ray.data._internal.progress"


@dataclasses.dataclass
class ConsoleSettings:
    level: str = "INFO"
    interactive: bool = dataclasses.field(default_factory=lambda: sys.stderr.isatty())

    @property
    def third_party_level(self) -> str:
        return THIRD_PARTY_LEVELS[self.level]


settings = ConsoleSettings()  # this process's choice, read again by configure_ray_output


def configure_console(level: str = "INFO", interactive: bool | None = None) -> ConsoleSettings:
    """Set our loggers to `level` and third-party ones to THIRD_PARTY_LEVELS[level]; off a terminal, turn
    the progress bars of Ray Data, Hugging Face and tqdm off in this process and in its Ray workers.
    The log levels follow `level` (the user's --log-level); progress-bar variables the user set are kept."""
    global settings
    settings = ConsoleSettings(level, sys.stderr.isatty() if interactive is None else interactive)
    if hasattr(sys.stdout, "reconfigure"):  # piped stdout is block-buffered: keep prints in order with the logs
        sys.stdout.reconfigure(line_buffering=True)
    logging.basicConfig(format=LOG_FORMAT, datefmt="%H:%M:%S")
    logging.getLogger().setLevel(settings.third_party_level)
    for name in OWN_LOGGERS:
        logging.getLogger(name).setLevel(level)
    os.environ[LOG_LEVEL_ENV] = level  # our loggers in Ray Train workers (crs_core.training.loop)
    os.environ[PROGRESS_ENV] = "bars" if settings.interactive else "lines"
    quiet = settings.third_party_level.lower()
    os.environ["RAY_LOGGER_LEVEL"] = quiet  # the driver's "ray" logger (ray.init's logging_level)
    os.environ["TRANSFORMERS_VERBOSITY"] = quiet
    # Ray Train (v2) workers turn print() into a log record and, since Ray replaced their sys.stdout, print it
    # as well: every line of the training loop came out twice. Off, a worker's print is printed once.
    os.environ.setdefault("RAY_TRAIN_ENABLE_PRINT_PATCH", "0")
    if "transformers" in sys.modules:  # imported already: the variable above came too late
        import transformers

        transformers.logging.set_verbosity(getattr(logging, settings.third_party_level))
    if not settings.interactive:
        for variable in ("RAY_DATA_DISABLE_PROGRESS_BARS", "HF_HUB_DISABLE_PROGRESS_BARS", "TQDM_DISABLE"):
            os.environ.setdefault(variable, "1")
    return settings


def configure_ray_output() -> None:
    """After `import ray`: Ray Data's console handler at the third-party level (its DEBUG file log in the
    session's logs directory stays complete); on a terminal Ray Data's live progress view, off one no progress
    bars and no note about them."""
    import ray.data

    context = ray.data.DataContext.get_current()
    context.print_on_execution_start = settings.level == "DEBUG"
    for handler in logging.getLogger("ray.data").handlers:
        if not type(handler).__name__.endswith("FileHandler"):  # logging.FileHandler, Ray's SessionFileHandler
            handler.setLevel(settings.third_party_level)
    if settings.interactive:  # Ray 2.60's tqdm bars do not reach a local terminal; its rich ones do
        context.enable_rich_progress_bars, context.use_ray_tqdm = True, False
    else:
        context.enable_progress_bars = False
        logging.getLogger(RAY_DATA_PROGRESS_LOGGER).setLevel(logging.ERROR)
