"""Classify's records as files and streams: renderers (render), the crash-safe --output file and the --failures
log (file), and the plan of both made before any work (plan)."""

from zsclip.classify.output.file import RESUMABLE, DonePaths, FailuresLog, OutputFile, lock_path, resolved_inputs
from zsclip.classify.output.plan import OutputPlan, plan_output
from zsclip.classify.output.render import (
    CsvWriter,
    JsonlWriter,
    JsonWriter,
    TableWriter,
    Writer,
    common_root,
    csv_header,
    display_path,
    escape_surrogates,
    format_for_path,
    json_line,
    make_writer,
    readable,
    shorten_left,
)
from zsclip.core.paths import STDOUT, check_output_dir, check_output_file, resolved, writing

__all__ = [
    "RESUMABLE",
    "STDOUT",
    "CsvWriter",
    "DonePaths",
    "FailuresLog",
    "JsonWriter",
    "JsonlWriter",
    "OutputFile",
    "OutputPlan",
    "TableWriter",
    "Writer",
    "check_output_dir",
    "check_output_file",
    "common_root",
    "csv_header",
    "display_path",
    "escape_surrogates",
    "format_for_path",
    "json_line",
    "lock_path",
    "make_writer",
    "plan_output",
    "readable",
    "resolved",
    "resolved_inputs",
    "shorten_left",
    "writing",
]
